/**
 * Validation of chart objects, two independent ways:
 *
 * 1. the strict JSON Schema generated from kubernetes-types (test/kubernetes/testdata, unknown fields
 *    rejected), and the hand-written strict schemas of the custom resources (crd-schemas.ts), with ajv;
 * 2. kubernetes-models' own validation (`new Model(obj).validate()`: types, enums, required fields).
 *
 * `problems(obj)` returns every problem found, as strings naming the object; [] means valid.
 */
import { readFileSync } from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role";
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import type { KubeObject } from "../../components/kubernetes/index.ts";
import { SCHEMA_FILE } from "./api-schema.ts";
import { CRD_SCHEMAS } from "./crd-schemas.ts";

const ROOT = new URL("../../", import.meta.url);

/** kubernetes-models classes by `<apiVersion>/<kind>`. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  "v1/Namespace": Namespace,
  "v1/ServiceAccount": ServiceAccount,
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "v1/PersistentVolumeClaim": PersistentVolumeClaim,
  "apps/v1/Deployment": Deployment,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "rbac.authorization.k8s.io/v1/Role": Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": RoleBinding,
};

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface Validator {
  problems(obj: KubeObject | Json): string[];
  /** The `<apiVersion>/<kind>` keys the strict API schema covers. */
  readonly apiKinds: readonly string[];
}

export function validator(): Validator {
  const schema = JSON.parse(readFileSync(new URL(SCHEMA_FILE, ROOT), "utf8")) as Json;
  const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true });
  ajv.addSchema(schema, "k8s");
  const refs = schema.definitions.KubernetesApi.properties as Record<string, { $ref: string }>;
  const compiled = new Map<string, ValidateFunction>();
  for (const [key, { $ref }] of Object.entries(refs)) compiled.set(key, ajv.getSchema(`k8s${$ref}`)!);
  for (const [key, s] of Object.entries(CRD_SCHEMAS)) compiled.set(key, ajv.compile(s));
  return {
    apiKinds: Object.keys(refs),
    problems(obj) {
      const key = `${obj.apiVersion}/${obj.kind}`;
      const name = `${obj.kind} ${obj.metadata?.namespace ?? ""}/${obj.metadata?.name}`;
      const validate = compiled.get(key);
      if (!validate) return [`${name}: no strict schema for ${key}`];
      const out: string[] = [];
      if (!validate(obj))
        for (const e of validate.errors ?? [])
          out.push(
            `${name}: schema: ${e.instancePath || "/"} ${e.message}${e.params && "additionalProperty" in e.params ? ` "${e.params.additionalProperty}"` : ""}`,
          );
      const Model = MODELS[key];
      if (Model) {
        try {
          new Model(structuredClone(obj) as never).validate();
        } catch (err) {
          out.push(`${name}: kubernetes-models: ${(err as Error).message}`);
        }
      } else if (!CRD_SCHEMAS[key]) out.push(`${name}: no kubernetes-models class for ${key}`);
      return out;
    },
  };
}
