/** Port helpers for tests that start whole process trees on 127.0.0.1. */
import net from "node:net";

/** A free block of `n` consecutive ports on 127.0.0.1 (probed by binding each). */
export async function freeBlock(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 21000 + Math.floor(Math.random() * 11000); // below the ephemeral range (32768+)
    let ok = true;
    for (let p = base; p < base + n && ok; p++)
      ok = await new Promise<boolean>((resolve) => {
        const s = net.createServer();
        s.once("error", () => resolve(false));
        s.listen({ port: p, host: "127.0.0.1", exclusive: true }, () => s.close(() => resolve(true)));
      });
    if (ok) return base;
  }
  throw new Error("no free port block");
}

/**
 * A port with nothing listening on 127.0.0.1, from below the ephemeral range (32768+): a child
 * process binds it later, and a port the kernel hands out for outgoing connections could be taken by
 * one of the suite's client sockets in between (EADDRINUSE in the child, seen in CI).
 */
export function freePort(): Promise<number> {
  return freeBlock(1);
}
