<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>docpipe run ${report.run_id}: ${report.pipeline}</title>
<style>
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
         margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
  h1 { font-size: 1.5rem; margin-bottom: .2rem; }
  h2 { font-size: 1.1rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
  .sub { color: #666; margin-top: 0; }
  .status-finished { color: #2a7a2a; } .status-paused { color: #b36b00; }
  table { border-collapse: collapse; margin: .5rem 0; }
  td, th { padding: .25rem .8rem .25rem 0; text-align: left; vertical-align: top; }
  th { color: #666; font-weight: 500; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr));
           gap: 1rem; }
  .plots svg { width: 100%; height: auto; }
  pre { background: #f6f6f6; padding: .7rem; overflow-x: auto; font-size: 12px; }
  .source { max-width: 520px; overflow-wrap: anywhere; }
  .simulated { background: #fff4d6; border-left: 4px solid #b36b00; padding: .5rem .8rem; }
</style>
</head>
<body>
<h1>Run ${report.run_id}: ${report.pipeline}
  <span class="status-${report.status}">${report.status}</span></h1>
<p class="sub">docpipe run report, generated ${generated}</p>
% if report.simulated_calls:
<p class="simulated">Simulated: docpipe's simulator answered ${report.simulated_calls} of
  ${report.attempts} calls, not a model. Costs are what the same tokens would cost.</p>
% endif

<h2>Summary</h2>
<table>
% for name, value in summary:
  <tr><th>${name}</th><td>${value}</td></tr>
% endfor
</table>

% if report.documents_failed:
<h2>Failed documents</h2>
<p>${report.documents_failed} failed${"; the first %d:" % len(failed) if report.documents_failed > len(failed) else ":"}
  <code>docpipe results ${report.run_id} --failed</code> lists them all with their messages.</p>
<table>
  <tr><th>item</th><th>document</th><th>code</th><th>message</th></tr>
% for row in failed:
  <tr><td class="num">${row.item_id}</td><td class="source">${row.source}</td>
      <td>${row.error_code}</td><td class="source">${row.error_message}</td></tr>
% endfor
</table>
% endif

<h2>Over time</h2>
<div class="plots">
% for svg in plots:
  <figure>${svg | n}</figure>
% endfor
</div>

<h2>Slowest documents</h2>
<table>
  <tr><th>item</th><th>document</th><th>calls</th><th>time in calls</th><th>cost</th></tr>
% for row in slowest:
  <tr><td class="num">${row["item"]}</td><td class="source">${row["source"]}</td>
      <td class="num">${row["calls"]}</td><td class="num">${row["latency"]}</td>
      <td class="num">${row["cost"]}</td></tr>
% endfor
</table>

<h2>Most expensive documents</h2>
<table>
  <tr><th>item</th><th>document</th><th>calls</th><th>tokens</th><th>cost</th></tr>
% for row in costliest:
  <tr><td class="num">${row["item"]}</td><td class="source">${row["source"]}</td>
      <td class="num">${row["calls"]}</td><td class="num">${row["tokens"]}</td>
      <td class="num">${row["cost"]}</td></tr>
% endfor
</table>

<h2>Configuration</h2>
<table>
% for name, value in config.items():
  % if name != "request":
  <tr><th>${name}</th><td>${value}</td></tr>
  % endif
% endfor
</table>
% if "request" in config:
<p>The request as sent, with the document's place marked:</p>
<pre>${config["request"]}</pre>
% endif
</body>
</html>
