-- POST a chat completion body with a bearer token; print the latency summary as one JSON line.
-- Env: BENCH_BODY (the JSON body), BENCH_TOKEN (optional bearer token).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"p50_us": %d, "p99_us": %d, "requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d}\n',
    latency:percentile(50), latency:percentile(99), summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
