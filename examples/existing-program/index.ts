/**
 * An existing Pulumi program — a team's Kubernetes stack with its own provider, a shared `tools`
 * namespace and an internal status page — that adopts meshgate by importing the `Platform` component:
 * the payments mesh (gateway, two services with sidecars, CA, NetworkPolicies) is one resource more,
 * deployed with the program's provider, and its outputs feed the resources the program already had.
 *
 *   cd examples/existing-program && pulumi stack init dev && pulumi up
 *
 * (Outside this repository, `npm install meshgate` first.) test/examples/existing-program.test.ts runs
 * it under Pulumi's mocks.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { defineMesh, Platform } from "meshgate";

const config = new pulumi.Config();

// ── what the program deployed before meshgate ──
const cluster = new k8s.Provider("cluster", {
  ...(config.get("context") ? { context: config.get("context") } : {}),
});
const tools = new k8s.core.v1.Namespace("tools", { metadata: { name: "tools" } }, { provider: cluster });

// ── meshgate, added to it ──
const payments = new Platform(
  "payments",
  {
    spec: defineMesh({
      name: "payments",
      trustDomain: "payments.example",
      services: {
        ledger: {
          image: "ghcr.io/acme/ledger:1.2.0",
          port: 8080,
          allow: [{ from: ["api"], methods: ["GET", "POST"], paths: ["/entries", "/entries/*"] }],
        },
        api: {
          image: "ghcr.io/acme/payments-api:3.1.4",
          port: 8080,
          calls: ["ledger"],
          allow: [{ from: ["gateway"], methods: ["GET", "POST"], paths: ["/payments", "/payments/*"] }],
        },
      },
      gateway: {
        hosts: ["pay.example.com"],
        jwt: {
          main: {
            issuer: "https://id.example.com/",
            audiences: ["payments"],
            jwksUri: "https://id.example.com/.well-known/jwks.json",
            algorithms: ["ES256"],
          },
        },
        routes: [
          {
            name: "create-payment",
            match: { path: "/v1/payments", methods: ["POST"] },
            to: "api",
            rewrite: { path: "/payments" },
            auth: { jwt: "main", scopes: ["payments:write"] },
            rateLimit: { requests: 50, per: "1s", key: "subject" },
          },
          {
            name: "get-payment",
            match: { path: "/v1/payments/{id}", methods: ["GET"] },
            to: "api",
            rewrite: { path: "/payments/{id}" },
            auth: { jwt: "main", scopes: ["payments:read"] },
          },
        ],
      },
      observability: { metrics: { backend: "none" }, tracing: { backend: "none" } },
    }),
    provider: cluster,
  },
  { dependsOn: [tools] },
);

// ── the program's own resources, now using the mesh's outputs ──
new k8s.core.v1.ConfigMap(
  "status-page",
  {
    metadata: { name: "status-page", namespace: tools.metadata.name },
    data: {
      "payments-endpoint": payments.gatewayEndpoint,
      // Clients outside the mesh that call it over mTLS trust its CA through this bundle.
      "payments-trust-bundle.pem": payments.trustBundlePem,
    },
  },
  { provider: cluster },
);

export const paymentsEndpoint = payments.gatewayEndpoint;
export const paymentsNamespace = payments.namespace;
export const paymentsCa = payments.caCertificatePem;
