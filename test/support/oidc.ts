/** An OIDC provider for specs in tests: `gateway.oidc.sso`, its client secret read from SSO_CLIENT_SECRET. */
export const SSO_PROVIDER = {
  issuer: "https://login.shop.example/",
  clientId: "shop",
  clientSecretEnv: "SSO_CLIENT_SECRET",
  redirectPath: "/oauth2/callback",
} as const;
