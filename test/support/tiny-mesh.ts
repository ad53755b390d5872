/** A small spec for tests of local mode (test/local/watch*.test.ts). */

/** Two demo services (web calls api) behind the gateway: the smallest mesh with every kind of process. */
export const TINY = `
name: tiny
trustDomain: tiny.test
services:
  web:
    image: example/web:1
    port: 8080
    calls: [api]
    allow:
      - from: [gateway]
        methods: [GET]
        paths: [/web, /web/**]
  api:
    image: example/api:1
    port: 8080
    allow:
      - from: [web]
        methods: [GET]
        paths: [/api/**]
gateway:
  hosts: [tiny.test]
  listeners:
    - { name: http, port: 8080, protocol: http }
  routes:
    - name: web
      match: { path: /web/**, methods: [GET] }
      to: web
      public: true
      rateLimit: { requests: 100, per: 1s, key: ip }
`;
