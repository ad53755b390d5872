/**
 * Hand-written strict JSON Schemas (draft-07, unknown fields rejected) of the custom resources the chart
 * emits, with the fields of cert-manager.io/v1 and monitoring.coreos.com/v1 that it uses (and their
 * close neighbours), transcribed from the projects' CRDs. `metadata` is the Kubernetes ObjectMeta of the
 * generated API schema (added to ajv as "k8s").
 */
type Schema = Record<string, unknown>;

const str: Schema = { type: "string", minLength: 1 };
const strings: Schema = { type: "array", items: str };
const labels: Schema = { type: "object", additionalProperties: { type: "string" } };
const closed = (properties: Record<string, Schema>, required: string[] = []): Schema => ({
  type: "object",
  properties,
  required,
  additionalProperties: false,
});
/** The prometheus-operator's Duration pattern. */
const promDuration: Schema = {
  type: "string",
  pattern: "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
};
/** A Go duration as cert-manager parses it (time.ParseDuration: h, m, s units). */
const goDuration: Schema = { type: "string", pattern: "^([0-9]+(\\.[0-9]+)?(h|m|s|ms))+$" };

const resource = (apiVersion: string, kind: string, spec: Schema): Schema =>
  closed(
    {
      apiVersion: { const: apiVersion },
      kind: { const: kind },
      metadata: { $ref: "k8s#/definitions/ObjectMeta" },
      spec,
    },
    ["apiVersion", "kind", "metadata", "spec"],
  );

const KEY_USAGES = [
  "signing",
  "digital signature",
  "content commitment",
  "key encipherment",
  "key agreement",
  "data encipherment",
  "cert sign",
  "crl sign",
  "encipher only",
  "decipher only",
  "any",
  "server auth",
  "client auth",
  "code signing",
  "email protection",
  "s/mime",
  "ipsec end system",
  "ipsec tunnel",
  "ipsec user",
  "timestamping",
  "ocsp signing",
  "microsoft sgc",
  "netscape sgc",
];

const RELABEL_ACTIONS = [
  "replace",
  "keep",
  "drop",
  "hashmod",
  "labelmap",
  "labeldrop",
  "labelkeep",
  "lowercase",
  "uppercase",
  "keepequal",
  "dropequal",
].flatMap((a) => [a, a[0]!.toUpperCase() + a.slice(1)]);

const relabel = closed({
  sourceLabels: { type: "array", items: { type: "string", pattern: "^[a-zA-Z_][a-zA-Z0-9_]*$" } },
  separator: { type: "string" },
  targetLabel: str,
  regex: { type: "string" },
  modulus: { type: "integer", minimum: 0 },
  replacement: { type: "string" },
  action: { enum: RELABEL_ACTIONS },
});

/** By `<apiVersion>/<kind>`. */
export const CRD_SCHEMAS: Record<string, Schema> = {
  "cert-manager.io/v1/Issuer": resource(
    "cert-manager.io/v1",
    "Issuer",
    closed(
      {
        ca: closed({ secretName: str, crlDistributionPoints: strings, ocspServers: strings }, ["secretName"]),
      },
      ["ca"],
    ),
  ),
  "cert-manager.io/v1/Certificate": resource(
    "cert-manager.io/v1",
    "Certificate",
    closed(
      {
        secretName: str,
        secretTemplate: closed({ labels, annotations: labels }),
        commonName: str,
        dnsNames: strings,
        uris: strings,
        ipAddresses: strings,
        emailAddresses: strings,
        isCA: { type: "boolean" },
        duration: goDuration,
        renewBefore: goDuration,
        privateKey: closed({
          algorithm: { enum: ["RSA", "ECDSA", "Ed25519"] },
          size: { type: "integer" },
          encoding: { enum: ["PKCS1", "PKCS8"] },
          rotationPolicy: { enum: ["Never", "Always"] },
        }),
        usages: { type: "array", items: { enum: KEY_USAGES } },
        issuerRef: closed({ name: str, kind: str, group: str }, ["name"]),
      },
      ["secretName", "issuerRef"],
    ),
  ),
  "monitoring.coreos.com/v1/ServiceMonitor": resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    closed(
      {
        jobLabel: { type: "string" },
        selector: { $ref: "k8s#/definitions/LabelSelector" },
        namespaceSelector: closed({ any: { type: "boolean" }, matchNames: strings }),
        endpoints: {
          type: "array",
          items: closed({
            port: str,
            targetPort: { anyOf: [{ type: "integer" }, { type: "string" }] },
            path: { type: "string" },
            scheme: { enum: ["http", "https", "HTTP", "HTTPS"] },
            interval: promDuration,
            scrapeTimeout: promDuration,
            honorLabels: { type: "boolean" },
            honorTimestamps: { type: "boolean" },
            relabelings: { type: "array", items: relabel },
            metricRelabelings: { type: "array", items: relabel },
          }),
        },
      },
      ["selector"],
    ),
  ),
  "monitoring.coreos.com/v1/PrometheusRule": resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    closed({
      groups: {
        type: "array",
        items: closed(
          {
            name: str,
            interval: promDuration,
            limit: { type: "integer" },
            rules: {
              type: "array",
              items: {
                ...closed(
                  {
                    record: str,
                    alert: str,
                    expr: { anyOf: [{ type: "integer" }, str] },
                    for: promDuration,
                    keep_firing_for: promDuration,
                    labels,
                    annotations: labels,
                  },
                  ["expr"],
                ),
                oneOf: [{ required: ["record"] }, { required: ["alert"] }],
              },
            },
          },
          ["name"],
        ),
      },
    }),
  ),
};
