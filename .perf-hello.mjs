import http from "node:http";
const body = Buffer.from('{"id":42,"name":"meshgate bench item","price":12.5,"tags":["alpha","beta"],"ok":true,"pad":"xxxxxxxxxxxxxxxxx"}');
http.createServer((req, res) => { res.writeHead(200, {"content-type":"application/json","content-length":body.length}); res.end(body); }).listen(18084, "127.0.0.1");
