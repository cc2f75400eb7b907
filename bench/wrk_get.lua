-- wrk script: GET a random job's details from a list of job ids.
--   wrk ... -s bench/wrk_get.lua http://127.0.0.1:PORT -- IDS_FILE PROJECT_ID
-- Prints one line "BENCH_JSON {...}" with the totals and latency percentiles (microseconds).

local ids = {}
local project = ""
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    if #line > 0 then ids[#ids + 1] = line end
  end
  f:close()
  project = args[2]
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/v2/" .. project .. "/training-jobs/" .. id)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
