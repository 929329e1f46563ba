-- wrk script: POSTs 1 KB `installing` bodies, each with a distinct execution id (per thread and request),
-- so the broker's de-duplication never short-cuts the work. The path comes from the URL given to wrk.
local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  run = tostring(os.time())
end

local template = '{"random_id":"%s","execution_id":"%s","type":"lxc","nsapp":"jellyfin","status":"installing","ct_type":1,"disk_size":8,"core_count":2,"ram_size":2048,"os_type":"debian","os_version":"13","pve_version":"9.0.10","method":"default","cpu_vendor":"intel","cpu_model":"Intel Core i5-8500T CPU @ 2.10GHz","gpu_vendor":"intel","gpu_model":"Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]","gpu_passthrough":"igpu","ram_speed":"2667","repo_source":"ProxmoxVE","note":"%s"}'
local pad = string.rep("x", 1024 - #template)

function request()
  counter = counter + 1
  local id = "wrk-" .. run .. "-" .. tid .. "-" .. counter
  local body = string.format(template, id, id, pad)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("WRK requests=%d duration_s=%.2f rps=%.0f non2xx=%d p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6), non2xx,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
