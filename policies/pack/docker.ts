/**
 * The pack's resource policies for the Docker target (`docker:index/container:Container`), with the labels
 * the Docker renderer (components/docker) sets on every container it creates:
 *
 *   `meshgate.io/role`: `network`, `app`, `sidecar`, `gateway` or `prometheus`;
 *   `meshgate.io/admin-port`: the container port of an unauthenticated admin listener (the proxies' admin
 *   port, Prometheus' web port) — it may be published on the loopback interface only.
 *
 * Docker has no NetworkPolicy: the sidecar is the only enforcement between services, so a sidecar that does
 * not share its service's network namespace leaves that service open, and is reported.
 */
import type { ReportViolation, ResourceValidationArgs, ResourceValidationPolicy } from "@pulumi/policy";
import { imagePinned } from "../../components/kubernetes/model.ts";

/** The Docker container resource type. */
export const DOCKER_CONTAINER = "docker:index/container:Container";
/** Container label: the container's part in the mesh. */
export const DOCKER_ROLE_LABEL = "meshgate.io/role";
/** Container label: the container port of its admin listener. */
export const DOCKER_ADMIN_PORT_LABEL = "meshgate.io/admin-port";

type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A container's labels (the provider takes them as `[{label, value}]`). */
export function dockerLabels(props: Loose): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of (props.labels ?? []) as Loose[])
    if (typeof l?.label === "string") out[l.label] = String(l.value ?? "");
  return out;
}

const LOOPBACK = new Set(["127.0.0.1", "::1"]);

/** A resource policy over every Docker container. */
function containerPolicy(
  name: string,
  description: string,
  check: (
    props: Loose,
    labels: Record<string, string>,
    report: ReportViolation,
    args: ResourceValidationArgs,
  ) => void,
): ResourceValidationPolicy {
  return {
    name,
    description,
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      if (args.type !== DOCKER_CONTAINER) return;
      const props = args.props as Loose;
      check(props, dockerLabels(props), report, args);
    },
  };
}

const nameOf = (props: Loose, args: ResourceValidationArgs) => String(props.name ?? args.name);

export const dockerNoPrivileged = containerPolicy(
  "docker-no-privileged-containers",
  "no privileged containers, no added capabilities beyond the default set's NET_BIND_SERVICE, no host PID/IPC/user namespace",
  (props, _labels, report, args) => {
    const name = nameOf(props, args);
    if (props.privileged === true) report(`container "${name}" is privileged`);
    for (const key of ["pidMode", "ipcMode", "usernsMode"])
      if (props[key] === "host") report(`container "${name}" sets ${key}: host`);
    const adds = ((props.capabilities?.adds ?? []) as string[]).filter((c) => c !== "NET_BIND_SERVICE");
    if (adds.length > 0) report(`container "${name}" adds capabilities ${adds.join(", ")}`);
  },
);

export const dockerNoHostNetwork = containerPolicy(
  "docker-no-host-network",
  "no container uses the host's network namespace",
  (props, _labels, report, args) => {
    if (props.networkMode === "host")
      report(
        `container "${nameOf(props, args)}" uses networkMode: host: it would bypass the mesh network and reach every host port`,
      );
  },
);

export const dockerSidecarSharesServiceNetwork = containerPolicy(
  "docker-sidecar-shares-the-service-network",
  `every meshgate sidecar container (${DOCKER_ROLE_LABEL}=sidecar) runs in its service's network namespace (networkMode container:…), with no network or published port of its own`,
  (props, labels, report, args) => {
    if (labels[DOCKER_ROLE_LABEL] !== "sidecar") return;
    const name = nameOf(props, args);
    const mode = String(props.networkMode ?? "");
    if (!mode.startsWith("container:") || mode === "container:")
      report(
        `sidecar "${name}" has networkMode ${JSON.stringify(props.networkMode ?? null)}: it must be container:<the service's network container> or the app's traffic bypasses mTLS and authorization`,
      );
    if (((props.networksAdvanced ?? []) as unknown[]).length > 0)
      report(
        `sidecar "${name}" joins networks of its own: it shares its service's network namespace with the app`,
      );
    if (((props.ports ?? []) as unknown[]).length > 0)
      report(`sidecar "${name}" publishes ports: peers reach it through the mesh network, never the host`);
  },
);

export const dockerAdminPortsOnLoopback = containerPolicy(
  "docker-admin-ports-on-loopback",
  `a published admin port (${DOCKER_ADMIN_PORT_LABEL}) binds 127.0.0.1 or ::1 only`,
  (props, labels, report, args) => {
    const admin = labels[DOCKER_ADMIN_PORT_LABEL];
    if (props.publishAllPorts === true)
      report(
        `container "${nameOf(props, args)}" sets publishAllPorts: publish each port with its host address`,
      );
    if (admin === undefined) return;
    for (const p of (props.ports ?? []) as Loose[])
      if (String(p.internal) === admin && !LOOPBACK.has(String(p.ip ?? "0.0.0.0")))
        report(
          `container "${nameOf(props, args)}" publishes its admin port ${admin} on ${p.ip ?? "0.0.0.0"}: bind it to 127.0.0.1 (the admin API has no authentication)`,
        );
  },
);

export const dockerImagesPinned = containerPolicy(
  "docker-images-pinned",
  "container images are an image ID (sha256:…), or a reference pinned by tag or digest (never untagged or :latest)",
  (props, _labels, report, args) => {
    const image = String(props.image ?? "");
    if (!/^sha256:[0-9a-f]{64}$/.test(image) && !imagePinned(image))
      report(
        `container "${nameOf(props, args)}" runs image "${image}": pin a version tag or a sha256 digest`,
      );
  },
);

const PRIVATE_KEY = /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----/;

export const dockerKeysNotInEnv = containerPolicy(
  "docker-private-keys-not-in-env",
  "no private key in a container's environment (meshgate copies keys into files readable by the proxy only)",
  (props, _labels, report, args) => {
    for (const e of (props.envs ?? []) as unknown[])
      if (typeof e === "string" && PRIVATE_KEY.test(e))
        report(
          `container "${nameOf(props, args)}" has a private key in env ${e.split("=")[0]}: copy it into a 0400 file instead`,
        );
  },
);

/** The Docker policies, in the order the engine runs them. */
export const DOCKER_POLICIES: ResourceValidationPolicy[] = [
  dockerNoPrivileged,
  dockerNoHostNetwork,
  dockerSidecarSharesServiceNetwork,
  dockerAdminPortsOnLoopback,
  dockerImagesPinned,
  dockerKeysNotInEnv,
];
