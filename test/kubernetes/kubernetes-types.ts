/**
 * The Kubernetes API kinds the chart emits, by `<apiVersion>/<kind>`: scripts/kubernetes-schema.ts turns
 * this type into the strict JSON Schema the tests validate every object against (unknown fields rejected).
 */
import type { HorizontalPodAutoscaler } from "kubernetes-types/autoscaling/v2.js";
import type { Deployment } from "kubernetes-types/apps/v1.js";
import type {
  ConfigMap,
  Namespace,
  PersistentVolumeClaim,
  Secret,
  Service,
  ServiceAccount,
} from "kubernetes-types/core/v1.js";
import type { NetworkPolicy } from "kubernetes-types/networking/v1.js";
import type { PodDisruptionBudget } from "kubernetes-types/policy/v1.js";
import type { Role, RoleBinding } from "kubernetes-types/rbac/v1.js";

export interface KubernetesApi {
  "v1/Namespace": Namespace;
  "v1/ServiceAccount": ServiceAccount;
  "v1/ConfigMap": ConfigMap;
  "v1/Secret": Secret;
  "v1/Service": Service;
  "v1/PersistentVolumeClaim": PersistentVolumeClaim;
  "apps/v1/Deployment": Deployment;
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler;
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget;
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy;
  "rbac.authorization.k8s.io/v1/Role": Role;
  "rbac.authorization.k8s.io/v1/RoleBinding": RoleBinding;
}
