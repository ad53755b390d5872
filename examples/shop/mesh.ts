/**
 * The shop, written in TypeScript: the same mesh as mesh.yaml, with editor completion and type checking
 * for every key. `meshgate validate examples/shop/mesh.ts` reads it exactly like the YAML, and
 * test/translate/examples.test.ts proves both give the same IR.
 */
import { defineMesh } from "meshgate/spec";

export default defineMesh({
  name: "shop",
  trustDomain: "shop.example",
  mesh: {
    mtls: "strict",
    ca: {
      rootValidity: "10y",
      intermediateValidity: "1y",
      workloadTtl: "24h",
      renewBefore: "8h",
    },
    defaults: {
      timeout: "2s",
      retries: {
        attempts: 2,
        perTryTimeout: "500ms",
        on: ["connect-failure", "refused-stream", "reset", "503"],
        budget: {
          ratio: 0.2,
          minPerSecond: 10,
        },
      },
      circuitBreaker: {
        consecutive5xx: 5,
        baseEjection: "30s",
        maxEjectedPercent: 50,
      },
      loadBalancer: "least-request",
    },
  },
  services: {
    catalog: {
      image: "ghcr.io/acme/catalog:2.3.0",
      port: 8080,
      replicas: 3,
      healthCheck: {
        path: "/healthz",
      },
      calls: ["product-images"],
      allow: [
        {
          from: ["gateway", "search", "search-next"],
          methods: ["GET", "HEAD"],
          paths: ["/products", "/products/*"],
        },
      ],
    },
    "catalog-v2": {
      image: "ghcr.io/acme/catalog:3.0.0-rc.1",
      port: 8080,
      replicas: 1,
      allow: [
        {
          from: ["gateway"],
          methods: ["GET", "HEAD"],
          paths: ["/products", "/products/*"],
        },
      ],
    },
    search: {
      image: "ghcr.io/acme/search:1.9.4",
      port: 8080,
      replicas: 2,
      calls: ["catalog"],
      allow: [
        {
          from: ["gateway"],
          methods: ["GET"],
          paths: ["/search"],
        },
      ],
    },
    "search-next": {
      image: "ghcr.io/acme/search:2.0.0-beta.3",
      port: 8080,
      calls: ["catalog"],
      allow: [
        {
          from: ["gateway"],
          methods: ["GET"],
          paths: ["/search"],
        },
      ],
    },
    orders: {
      image: "ghcr.io/acme/orders:1.4.2",
      port: 8080,
      replicas: 3,
      calls: ["payments", "inventory", "notifications", "users"],
      timeout: "3s",
      allow: [
        {
          from: ["gateway"],
          methods: ["GET", "POST"],
          paths: ["/orders", "/orders/*"],
        },
      ],
      routes: [
        {
          name: "create",
          match: {
            path: "/orders",
            methods: ["POST"],
          },
          timeout: "5s",
          retries: {
            attempts: 1,
            on: ["connect-failure", "refused-stream"],
          },
        },
      ],
    },
    payments: {
      image:
        "ghcr.io/acme/payments:5.0.1@sha256:3b1f8a3c2e6d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90",
      port: 8443,
      replicas: 3,
      calls: ["card-processor", "risk-engine", "bank-payouts"],
      timeout: "4s",
      circuitBreaker: {
        consecutive5xx: 3,
        maxEjectedPercent: 34,
      },
      limits: {
        maxBodySize: "64KiB",
      },
      resources: {
        cpu: "500m",
        memory: "512Mi",
      },
      allow: [
        {
          from: ["orders"],
          methods: ["POST"],
          paths: ["/payments"],
        },
        {
          from: ["orders"],
          methods: ["GET"],
          paths: ["/payments/{id}"],
        },
      ],
      routes: [
        {
          name: "charge",
          match: {
            path: "/payments",
            methods: ["POST"],
          },
          timeout: "3s",
          retries: {
            attempts: 0,
          },
        },
        {
          name: "status",
          match: {
            path: "/payments/{id}",
            methods: ["GET"],
          },
          retries: {
            attempts: 2,
            perTryTimeout: "300ms",
            on: ["connect-failure", "reset", "503", "504"],
          },
        },
      ],
    },
    inventory: {
      image: "ghcr.io/acme/inventory:4.2.0",
      port: 8080,
      replicas: 2,
      loadBalancer: "ring-hash",
      allow: [
        {
          from: ["orders"],
          methods: ["GET", "POST"],
          paths: ["/inventory/**"],
        },
        {
          from: ["gateway"],
          methods: ["GET"],
          paths: ["/inventory/*"],
        },
      ],
      routes: [
        // Reservations are POSTs: retried only when no byte reached the service (meshgate verify checks it).
        {
          name: "reserve",
          match: { path: "/inventory/**", methods: ["POST"] },
          retries: { on: ["connect-failure", "refused-stream"] },
        },
      ],
    },
    users: {
      image: "ghcr.io/acme/users:3.1.0",
      port: 8080,
      replicas: 2,
      allow: [
        {
          from: ["gateway"],
          methods: ["GET"],
          paths: ["/me"],
        },
        {
          from: ["orders"],
          methods: ["GET"],
          paths: ["/users/*"],
        },
      ],
    },
    notifications: {
      image: "ghcr.io/acme/notifications:0.9.7",
      port: 9090,
      protocol: "grpc",
      retries: { on: ["connect-failure", "refused-stream"] }, // Send is a POST: never retried once sent
      allow: [
        {
          from: ["orders"],
          methods: ["POST"],
          paths: ["/shop.notifications.v1.Notifier/Send"],
        },
      ],
    },
  },
  // Destinations outside the mesh, deny by default: payments' sidecar relays to the card processor —
  // http://api.stripe.com/… through HTTP_PROXY over TLS it originates and verifies, CONNECT tunnels
  // (HTTPS_PROXY), or its local port — and refuses any other destination.
  external: {
    "card-processor": {
      host: "api.stripe.com",
      port: 443,
      tls: "originate",
      allow: [{ from: ["payments"] }],
    },
    // A wildcard: every bucket of the region, not the region's own name; catalog's sidecar opens TLS to
    // the bucket it calls (http://<bucket>.s3.eu-west-1.amazonaws.com/…).
    "product-images": {
      host: "*.s3.eu-west-1.amazonaws.com",
      port: 443,
      tls: "originate",
      allow: [{ from: ["catalog"] }],
    },
    // A range: the on-premises risk-scoring appliances, by address; payments reaches any of them with
    // CONNECT <address>:8443 (TLS end to end), and the NetworkPolicy opens exactly this range.
    "risk-engine": {
      host: "10.40.0.0/24",
      port: 8443,
      maxConnections: 16, // the appliances take few connections: each payments sidecar opens at most 16
      allow: [{ from: ["payments"] }],
    },
    // Mutual TLS: the bank authenticates the shop by a client certificate; payments' sidecar opens TLS
    // to it presenting the certificate of the Kubernetes TLS Secret bank-payouts-client.
    "bank-payouts": {
      host: "payouts.bank.example",
      port: 443,
      tls: "originate",
      clientCertificate: { secret: "bank-payouts-client" },
      allow: [{ from: ["payments"] }],
    },
    // A gateway route's backend outside the mesh: track-shipment forwards to the carrier's tracking API
    // itself (TLS the gateway opens, verified for the carrier's name); only the gateway is allowed.
    "carrier-tracking": {
      host: "tracking.carrier.example",
      port: 443,
      tls: "originate",
      timeout: "3s",
      allow: [{ from: ["gateway"] }],
    },
  },
  gateway: {
    replicas: 2,
    hosts: ["api.shop.example", "shop.example"],
    listeners: [
      {
        name: "http",
        port: 8080,
        protocol: "http",
      },
      {
        name: "https",
        port: 8443,
        protocol: "https",
        tls: {
          minVersion: "TLSv1.2",
          certificates: [
            {
              hosts: ["api.shop.example", "shop.example"],
              secret: "shop-tls",
            },
          ],
        },
      },
    ],
    clientIp: {
      // X-Forwarded-For is believed only from the machine itself and the VPC's public subnets, where an
      // ALB has its nodes — not from the pods' private subnets (see mesh.yaml).
      trustedProxies: ["127.0.0.0/8", "10.0.0.0/18"],
    },
    limits: {
      maxHeaderSize: "16KiB",
      maxBodySize: "1MiB",
      headerTimeout: "10s",
    },
    jwt: {
      main: {
        issuer: "https://id.shop.example/",
        audiences: ["shop-api"],
        jwksUri: "https://id.shop.example/.well-known/jwks.json",
        algorithms: ["ES256"],
        forwardClaims: {
          "x-shop-user": "sub",
        },
      },
    },
    apiKeys: {
      header: "x-api-key",
      consumers: {
        "acme-retail": {
          keyHashes: ["sha256:8914c106c8337bca394019955a780658b362d4ce5069eafaa26f12c9de1451b4"],
          groups: ["partners"],
        },
        globex: {
          keyHashes: [
            "sha256:0aef9a797b1f4523f91fe6c361cd0df88248789ca6cb8cad188d5030ac2f717e",
            "sha256:41c1166f2d47d25e03c6ce19c59e32915b9d0b6e9c4622eebc8f36ad5c31bf35",
          ],
          groups: ["partners", "bulk"],
        },
      },
    },
    rateLimitStore: {
      redis: {
        url: "redis://redis.shop.svc.cluster.local:6379",
        failMode: "open",
      },
    },
    cache: {
      maxSize: "128MiB",
    },
    routes: [
      {
        name: "list-products",
        match: {
          path: "/api/products",
          methods: ["GET", "HEAD"],
        },
        split: [
          {
            service: "catalog",
            weight: 90,
          },
          {
            service: "catalog-v2",
            weight: 10,
          },
        ],
        rewrite: {
          path: "/products",
        },
        public: true,
        rateLimit: {
          requests: 600,
          per: "1m",
          key: "ip",
        },
        cache: {
          ttl: "30s",
          vary: ["accept-language"],
        },
        cors: {
          origins: ["https://shop.example"],
          methods: ["GET", "HEAD"],
        },
      },
      {
        name: "get-product",
        match: {
          path: "/api/products/{id}",
          methods: ["GET", "HEAD"],
        },
        split: [
          {
            service: "catalog",
            weight: 90,
          },
          {
            service: "catalog-v2",
            weight: 10,
          },
        ],
        rewrite: {
          path: "/products/{id}",
        },
        public: true,
        rateLimit: {
          requests: 1200,
          per: "1m",
          key: "ip",
        },
        cache: {
          ttl: "60s",
          // A product page stays up when the catalog is down: the last good copy for 10 minutes.
          staleIfError: "10m",
        },
      },
      {
        name: "products-chaos",
        match: {
          path: "/api/products",
          methods: ["GET"],
          headers: {
            "x-chaos": "on",
          },
        },
        to: "catalog-v2",
        rewrite: {
          path: "/products",
        },
        auth: {
          jwt: "main",
          scopes: ["chaos:inject"],
        },
        fault: {
          delay: {
            duration: "200ms",
            percent: 50,
          },
          abort: {
            status: 503,
            percent: 10,
          },
        },
      },
      {
        name: "search",
        match: {
          path: "/api/search",
          methods: ["GET"],
        },
        to: "search",
        mirror: {
          service: "search-next",
          percent: 20,
        },
        rewrite: {
          path: "/search",
        },
        public: true,
        rateLimit: {
          requests: 300,
          per: "1m",
          key: "ip",
        },
        cache: {
          ttl: "10s",
          vary: ["accept-language"],
        },
      },
      {
        name: "list-orders",
        match: {
          path: "/api/orders",
          methods: ["GET"],
        },
        to: "orders",
        rewrite: {
          path: "/orders",
        },
        auth: {
          jwt: "main",
          scopes: ["orders:read"],
        },
        rateLimit: {
          requests: 100,
          per: "1m",
          key: "subject",
        },
        cache: {
          ttl: "5s",
          perPrincipal: true,
        },
        cors: {
          origins: ["https://shop.example"],
          credentials: true,
        },
      },
      {
        name: "get-order",
        match: {
          path: "/api/orders/{id}",
          methods: ["GET"],
        },
        to: "orders",
        rewrite: {
          path: "/orders/{id}",
        },
        auth: {
          jwt: "main",
          scopes: ["orders:read"],
        },
        timeout: "3s", // covers orders' slowest call (a payment charge, 3s)
        retries: {
          attempts: 1,
          perTryTimeout: "300ms",
          on: ["connect-failure", "reset", "503", "504"],
        },
      },
      {
        name: "create-order",
        match: {
          path: "/api/orders",
          methods: ["POST"],
        },
        to: "orders",
        rewrite: {
          path: "/orders",
        },
        auth: {
          jwt: "main",
          scopes: ["orders:write"],
        },
        rateLimit: {
          requests: 20,
          per: "1m",
          key: "subject",
          burst: 5,
        },
        timeout: "6s",
        retries: {
          attempts: 1,
          on: ["connect-failure", "refused-stream"],
        },
        limits: {
          maxBodySize: "256KiB",
        },
        transform: {
          request: {
            headers: {
              set: {
                "x-channel": "web",
              },
            },
          },
        },
      },
      {
        name: "dashboard",
        match: {
          path: "/api/dashboard",
          methods: ["GET"],
        },
        auth: {
          jwt: "main",
          scopes: ["orders:read"],
        },
        timeout: "3s",
        aggregate: {
          orders: {
            service: "orders",
            path: "/orders",
            onError: "fail",
          },
          profile: {
            service: "users",
            path: "/me",
            onError: "fail",
          },
          featured: {
            service: "catalog",
            path: "/products/featured",
            timeout: "300ms",
            onError: "default",
            default: [],
          },
        },
      },
      {
        name: "me",
        match: {
          path: "/api/me",
          methods: ["GET"],
        },
        to: "users",
        rewrite: {
          path: "/me",
        },
        auth: {
          jwt: "main",
        },
        transform: {
          response: {
            headers: {
              remove: ["x-powered-by"],
            },
            body: {
              drop: ["internalId"],
              rename: {
                displayName: "name",
              },
            },
          },
        },
      },
      {
        name: "partner-stock",
        match: {
          path: "/partner/stock/{sku}",
          methods: ["GET"],
        },
        to: "inventory",
        rewrite: {
          path: "/inventory/{sku}",
        },
        auth: {
          apiKey: true,
          groups: ["partners"],
        },
        rateLimit: {
          requests: 1000,
          per: "1m",
          key: "consumer",
        },
      },
      {
        name: "partner-bulk-orders",
        match: {
          path: "/partner/orders",
          methods: ["POST"],
          hosts: ["api.shop.example"],
        },
        to: "orders",
        rewrite: {
          path: "/orders",
        },
        auth: {
          apiKey: true,
          groups: ["bulk"],
          clientIps: ["203.0.113.0/24", "2001:db8::/32"],
        },
        rateLimit: {
          requests: 60,
          per: "1m",
          key: "consumer",
          scope: "fleet",
        },
        limits: {
          maxBodySize: "4MiB",
        },
        transform: {
          request: {
            headers: {
              set: {
                "x-channel": "partner",
              },
            },
            body: {
              rename: {
                ref: "externalReference",
              },
              set: {
                source: "partner-api",
              },
            },
          },
        },
      },
      {
        name: "legacy-shop",
        match: {
          path: "/shop/**",
          methods: ["GET", "HEAD"],
        },
        redirect: {
          path: "/app",
          status: 301,
        },
        public: true,
        rateLimit: {
          requests: 120,
          per: "1m",
          key: "ip",
        },
      },
      {
        name: "app",
        match: {
          path: "/app/**",
          methods: ["GET", "HEAD"],
        },
        static: {
          dir: "examples/shop/web",
          spaFallback: "/index.html",
        },
        public: true,
        rateLimit: {
          requests: 3000,
          per: "1m",
          key: "ip",
        },
      },
      {
        name: "track-shipment",
        match: {
          path: "/api/shipments/{id}",
          methods: ["GET"],
        },
        to: { external: "carrier-tracking" },
        rewrite: {
          path: "/v2/shipments/{id}",
        },
        auth: {
          jwt: "main",
          scopes: ["orders:read"],
        },
        rateLimit: { requests: 60, per: "1m", key: "subject" },
        cache: { ttl: "30s", perPrincipal: true },
      },
    ],
  },
  observability: {
    metrics: {
      backend: "prometheus",
      scrapeInterval: "15s",
      retention: "30d",
    },
    tracing: {
      sampling: 0.1,
      backend: "tempo",
    },
    logs: {
      access: true,
      level: "info",
    },
    slos: [
      {
        route: "list-orders",
        availability: 99.9,
        latencyP99: "250ms",
      },
      {
        route: "create-order",
        availability: 99.95,
        latencyP99: "1s",
      },
      {
        name: "payments-availability",
        service: "payments",
        availability: 99.99,
        window: "28d",
      },
    ],
  },
  targets: {
    local: {
      gatewayPort: 8080,
      adminPort: 9901,
    },
    kubernetes: {
      gatewayServiceType: "LoadBalancer",
    },
    docker: {
      gatewayPort: 8080,
    },
    aws: {
      region: "eu-west-1",
      availabilityZones: 3,
      cluster: {
        create: {
          instanceType: "m7g.large",
          minNodes: 2,
          maxNodes: 6,
        },
      },
    },
  },
});
