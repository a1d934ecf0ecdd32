// An origin instrumented as the user's API is: the OpenTelemetry JS SDK with its default
// sampler (parent-based, always on for a root; OTEL_TRACES_SAMPLER unset), the http server
// instrumentation, and OTLP/HTTP protobuf export to OTEL_EXPORTER_OTLP_ENDPOINT. CommonJS, so
// the instrumentation patches `http` before it is required. Prints {"port": N} when listening.
const { NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME || 'api' }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter(), { scheduledDelayMillis: 200 })],
});
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation()] });

const http = require('http');
const server = http.createServer((req, res) => {
  const body = JSON.stringify({
    path: req.url,
    traceparent: req.headers['traceparent'] || null,
    request_id: req.headers['x-request-id'] || null,
  });
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));

const stop = () => provider.shutdown().finally(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
