// A minimal socketcluster-server 20.x: clients may subscribe and publish;
// no middleware, no application code.
const http = require('http');
const socketClusterServer = require('socketcluster-server');

const port = Number(process.argv[2] || 8000);
const httpServer = http.createServer();
socketClusterServer.attach(httpServer, {});
httpServer.listen(port, '127.0.0.1');
