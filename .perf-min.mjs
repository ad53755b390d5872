import http from "node:http";
import { Pool } from "undici";
const pool = new Pool("http://127.0.0.1:18080", { connections: 64 });
http.createServer((req, res) => {
  pool.stream({ method: req.method, path: req.url, headers: req.headers, body: null }, ({ statusCode, headers }) => {
    res.writeHead(statusCode, headers);
    return res;
  }).catch((e) => { res.destroy(e); });
}).listen(18081, "127.0.0.1");
