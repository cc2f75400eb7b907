-- wrk script: GET a random path from a file of paths (one per line), e.g. job status URLs of any service.
--   wrk ... -s bench/wrk_paths.lua http://127.0.0.1:PORT -- PATHS_FILE
-- Prints one line "BENCH_JSON {...}" with the totals and latency percentiles (microseconds).

local paths = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    if #line > 0 then paths[#paths + 1] = line end
  end
  f:close()
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  return wrk.format("GET", paths[math.random(#paths)])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
