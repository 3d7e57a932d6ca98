"""A plan as one self-contained HTML page (`reflow plan --html FILE`, `reflow show --html FILE`).

No network: CSS, JS and data are inline. Summary cards per sync, a bar per changed field,
the distribution of numeric deltas (new − old), and a searchable, filterable, paginated
table of row diffs with the exact payload of each. At most `max_rows` rows are embedded
(first rows of each sync, in plan order, shared fairly between syncs), and the page says so,
so a plan of millions of rows still gives a small, fast page. The page honours a URL fragment
such as `#filter=field:loyalty_tier,op:changed,sync:braze_users,q:c_0001`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from engine import strict_json
from engine.errors import UserError, scrub
from engine.formatting import duration as _duration
from engine.formatting import short
from engine.formatting import signed as _num
from engine.formatting import trimmed as _n
from engine.plan import Plan, SyncPlan
from engine.show import count_rows, iter_plan_rows, numeric_deltas, select_syncs
from engine.state import State

MAX_ROWS = 5000
MAX_DELTA_FIELDS = 6
PAGE_SIZE = 50


def write_report(path: Path, state: State, plan: Plan, *, sync: str | None = None, op: str | None = None,
                 field: str | None = None, key: str | None = None, max_rows: int = MAX_ROWS) -> dict[str, int]:
    """Write the report; returns {"embedded": rows in the page, "matching": rows matching the filters}."""
    page, info = render_report(state, plan, sync=sync, op=op, field=field, key=key, max_rows=max_rows)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(scrub(page), encoding="utf-8")     # defence in depth: rows holding one are refused
    except OSError as exc:
        raise UserError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
    return info


def render_report(state: State, plan: Plan, *, sync: str | None = None, op: str | None = None,
                  field: str | None = None, key: str | None = None,
                  max_rows: int = MAX_ROWS) -> tuple[str, dict[str, int]]:
    syncs = select_syncs(plan, sync)
    per_sync = {s.name: count_rows(state, plan, sync=s.name, op=op, field=field, key=key) for s in syncs}
    quota = _share(per_sync, max_rows)
    rows: list[dict[str, Any]] = []
    for s in syncs:
        if quota[s.name]:
            rows += [_compact_row(r) for r in iter_plan_rows(state, plan, sync=s.name, op=op, field=field,
                                                             key=key, limit=quota[s.name])]
    matching = sum(per_sync.values())
    deltas = {s.name: [d for d in (numeric_deltas(state, plan, s, f.field) for f in s.fields[:MAX_DELTA_FIELDS * 2])
                       if d is not None][:MAX_DELTA_FIELDS] for s in plan.syncs}
    filters = ", ".join(f"{k} {v}" for k, v in (("sync", sync), ("op", op), ("field", field), ("key", key)) if v)
    data = {"plan_id": plan.plan_id, "rows": rows, "page_size": PAGE_SIZE}
    body = [
        _header(plan, len(rows), matching, filters),
        _cards(plan),
        _fields_section(plan),
        _deltas_section(plan, deltas),
        _table_section(plan, rows, matching),
    ]
    page = TEMPLATE.format(
        title=html.escape(f"Reflow plan {plan.plan_id}"), css=CSS, body="\n".join(body),
        data=_script_json(data), js=JS)
    return page, {"embedded": len(rows), "matching": matching}


def _share(counts: dict[str, int], budget: int) -> dict[str, int]:
    """Split `budget` rows between syncs fairly: small syncs get all theirs, big ones share the rest."""
    out = dict.fromkeys(counts, 0)
    left = max(0, budget)
    pending = sorted(counts, key=lambda name: counts[name])
    while pending:
        name = pending.pop(0)
        take = min(counts[name], left // (len(pending) + 1))
        out[name] = take
        left -= take
    return out


def _compact_row(r: dict[str, Any]) -> dict[str, Any]:
    values = r["diff"] if r["diff"] else (r["old"] if r["op"] == "removed" else r["new"])
    return {"s": r["sync"], "k": r["key"], "o": r["kind"], "st": r["status"], "c": r["changed"],
            "v": values, "p": r["payload"], "r": r["reason"], "dp": r["data_points"], "ch": r["channel"]}


def _script_json(data: Any) -> str:
    text = strict_json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ------------------------------------------------------------------------------------------ sections


def _header(plan: Plan, embedded: int, matching: int, filters: str) -> str:
    totals = plan.to_json()["totals"]
    state = "no changes" if not plan.has_changes else (
        "blocked by a guard" if plan.blocked else "ready to apply")
    badge = "ok" if not plan.blocked else "bad"
    return f"""<header>
  <h1>Reflow plan <code id="plan-id">{_e(plan.plan_id)}</code></h1>
  <p class="meta">created {_e(plan.created_at.isoformat(timespec="seconds"))}Z &middot; status {_e(plan.status)}
  &middot; <span class="badge {badge}" id="verdict">{_e(state)}</span></p>
  <p class="totals" id="totals">
    <span data-total="added">+{_n(totals['added'])} added</span>
    <span data-total="changed">~{_n(totals['changed'])} changed</span>
    <span data-total="removed">-{_n(totals['removed'])} removed</span>
    <span data-total="requests">{_n(totals['requests'])} requests</span>
    <span data-total="data_points">~{_n(totals['data_points'])} data points</span>
    <span>~{_e(_duration(totals['estimated_seconds']))} at the rate limit</span>
  </p>
  {f'<p class="filters">Rows filtered by: {_e(filters)}</p>' if filters else ''}
</header>"""


COUNT_LABELS = (("added", "+"), ("changed", "~"), ("removed", "-"), ("unchanged", "="), ("retry", "↻"),
                ("invalid", "✗"))


def _cards(plan: Plan) -> str:
    cards = []
    for s in plan.syncs:
        j = s.to_json()
        counts = "".join(
            f'<div class="count {name}{" zero" if not j[name] else ""}"><b data-count="{name}">{_n(j[name])}</b>'
            f'<span>{name}</span></div>' for name, _sign in COUNT_LABELS)
        guards = "".join(
            f'<li class="{"bad" if g.blocked else "ok"}">{_e(g.describe())}</li>' for g in s.guards)
        reqs = ", ".join(f"{_e(k)}: {_n(v)}" for k, v in sorted(s.requests.items())) or "none"
        warnings = [*(w.describe() for w in s.warnings),
                    *(f"{f.field} changes type on {f.type_changes} row(s); Braze keeps the type it saw first"
                      for f in s.fields if f.type_changes),
                    *((f"{name}: unset on {held} row(s) (on_unmapped: unset)" if s.on_unmapped == "unset"
                       else f"no longer synced: Braze keeps {name} on {held} row(s)") for name, held in s.unmapped)]
        notes = "".join(f'<p class="note">{_e(x)}</p>' for x in (*s.notes, *warnings))
        cards.append(f"""<section class="card{' blocked' if s.blocked else ''}{' quiet' if not s.has_changes else ''}"
    data-sync="{_e(s.name)}">
  <h2>{_e(s.name)} <small>&rarr; {_e(s.object)} ({_e(s.connection)})</small></h2>
  <div class="counts">{counts}</div>
  <p class="cost"><b data-count="requests">{_n(s.total_requests)}</b> request{"" if s.total_requests == 1 else "s"} ({reqs}) &middot;
    ~<b data-count="data_points">{_n(s.data_points)}</b> data points &middot;
    ~{_e(_duration(s.seconds))} at the rate limit</p>
  {f'<ul class="guards">{guards}</ul>' if guards else ''}
  {notes}
</section>""")
    failed = "".join(f'<section class="card blocked" data-sync="{_e(f.sync)}"><h2>{_e(f.sync)}</h2>'
                     f'<p class="note">not planned: {_e(f.message)}</p></section>' for f in plan.failed)
    return '<div class="cards">' + "\n".join(cards) + failed + "</div>"


def _fields_section(plan: Plan) -> str:
    blocks = []
    for s in plan.syncs:
        if not s.fields:
            continue
        top = max(f.rows for f in s.fields) or 1
        bars = []
        for f in s.fields:
            sample = ""
            if f.samples:
                k, old, new = f.samples[0]
                sample = f"{k}: {short(old, 30, strings_as_json=True)} → {short(new, 30, strings_as_json=True)}"
            nulled = 100.0 * f.nulled / top
            bars.append(
                f'<div class="bar" data-field="{_e(f.field)}" data-rows="{f.rows}" title="{_e(sample)}">'
                f'<a class="name" href="#filter=sync:{_e(s.name)},field:{_e(f.field)}">{_e(f.field)}'
                f'{"" if not f.column or f.column == f.field else " ← " + _e(f.column)}</a>'
                f'<span class="track"><span class="fill" style="width:{100.0 * (f.rows - f.nulled) / top:.2f}%">'
                f'</span><span class="fill null" style="width:{nulled:.2f}%"></span></span>'
                f'<span class="num">{_n(f.rows)}{f" ({_n(f.nulled)} → null)" if f.nulled else ""}</span></div>')
        blocks.append(f'<div class="fieldchart" data-sync="{_e(s.name)}"><h3>{_e(s.name)}</h3>{"".join(bars)}</div>')
    if not blocks:
        return ""
    return ('<section class="panel"><h2>Changes per field</h2><p class="hint">Rows whose value of each field '
            'changed; the dark part became null. Click a field to filter the rows below.</p>'
            + "".join(blocks) + "</section>")


def _deltas_section(plan: Plan, deltas: dict[str, list[dict[str, Any]]]) -> str:
    charts = []
    for s in plan.syncs:
        for d in deltas.get(s.name, []):
            charts.append(_histogram(s, d))
    if not charts:
        return ""
    return ('<section class="panel"><h2>Numeric changes (new &minus; old)</h2>'
            '<div class="hists">' + "".join(charts) + "</div></section>")


def _histogram(s: SyncPlan, d: dict[str, Any]) -> str:
    bins: list[int] = d["bins"]
    top = max(bins) or 1
    w, h, pad = 300, 90, 2
    bw = w / len(bins)
    bars = []
    for i, c in enumerate(bins):
        bh = (h - pad) * c / top
        lo = d["min"] + i * d["bin_width"]
        label = _num(lo) if d.get("whole") else f"{_num(lo)} … {_num(lo + d['bin_width'])}"
        bars.append(f'<rect x="{i * bw + 0.5:.1f}" y="{h - bh:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}">'
                    f"<title>{_e(label)}: {c:,} rows</title></rect>")
    zero = ""
    if d["min"] < 0 < d["max"]:
        x = w * (0 - d["min"] + (0.5 * d["bin_width"] if d.get("whole") else 0)) / (len(bins) * d["bin_width"])
        zero = f'<line class="zero" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h}"/>'
    return f"""<figure class="hist" data-sync="{_e(s.name)}" data-field="{_e(d['field'])}">
  <figcaption><b>{_e(s.name)}.{_e(d['field'])}</b> &middot; {d['count']:,} rows &middot; median {_e(_num(d['median']))}
    &middot; &uarr;{d['increased']:,} &darr;{d['decreased']:,}</figcaption>
  <svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"
    aria-label="distribution of {_e(d['field'])} changes">{''.join(bars)}{zero}</svg>
  <div class="axis"><span>{_e(_num(d['min']))}</span><span>{_e(_num(d['max']))}</span></div>
</figure>"""


def _table_section(plan: Plan, rows: list[dict[str, Any]], matching: int) -> str:
    syncs = "".join(f'<option value="{_e(s.name)}">{_e(s.name)}</option>' for s in plan.syncs if s.has_changes)
    kinds = "".join(f'<option value="{k}">{k}</option>' for k in ("added", "changed", "removed", "retry", "invalid"))
    fields = sorted({f.field for s in plan.syncs for f in s.fields})
    field_opts = "".join(f'<option value="{_e(f)}">{_e(f)}</option>' for f in fields)
    if len(rows) < matching:
        embed_note = (f"This page embeds <b id=\"embedded\">{len(rows):,}</b> of <b id=\"matching\">{matching:,}</b> "
                      "plan rows: the first rows of each sync in plan order, shared between syncs. "
                      f"<code>reflow show {_e(plan.plan_id)} --format csv --limit 0</code> exports every row.")
    else:
        embed_note = (f"This page embeds all <b id=\"embedded\">{len(rows):,}</b> of "
                      f"<b id=\"matching\">{matching:,}</b> plan rows.")
    return f"""<section class="panel" id="rows-panel">
  <h2>Rows and payloads</h2>
  <p class="hint" id="embed-note">{embed_note}</p>
  <div class="controls">
    <input id="q" type="search" placeholder="search keys, values, payloads" aria-label="search">
    <select id="f-sync" aria-label="sync"><option value="">all syncs</option>{syncs}</select>
    <select id="f-op" aria-label="operation"><option value="">all operations</option>{kinds}</select>
    <select id="f-field" aria-label="changed field"><option value="">any field</option>{field_opts}</select>
    <span class="matches"><b id="match-count">{len(rows):,}</b> rows match</span>
  </div>
  <table id="rows-table">
    <thead><tr><th>sync</th><th>op</th><th>key</th><th>change</th><th>payload</th></tr></thead>
    <tbody id="rows"></tbody>
  </table>
  <div class="pager"><button id="prev" type="button">&larr; previous</button>
    <span id="page-info"></span><button id="next" type="button">next &rarr;</button></div>
</section>"""


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
<script type="application/json" id="reflow-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""

CSS = """
:root{--bg:#f6f7f9;--fg:#1d2330;--muted:#667085;--card:#fff;--line:#e4e7ec;--add:#12805c;--chg:#b54708;
--rem:#b42318;--ret:#0e7090;--inv:#7a2e9e;--bar:#4e6ef2;--null:#1d2a5c}
*{box-sizing:border-box}body{margin:0;padding:24px 32px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;background:var(--bg);color:var(--fg)}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 8px}h3{font-size:13px;margin:12px 0 6px;
color:var(--muted)}code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.meta,.hint{color:var(--muted);margin:2px 0}.totals span{display:inline-block;margin-right:14px;font-weight:600}
.badge{padding:1px 8px;border-radius:10px;font-weight:600}.badge.ok{background:#d1fadf;color:#05603a}
.badge.bad{background:#fee4e2;color:#912018}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:12px;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card.blocked{border-color:var(--rem);box-shadow:0 0 0 1px var(--rem)}.card.quiet{opacity:.7}
.card h2 small{font-weight:400;color:var(--muted)}
.counts{display:grid;grid-template-columns:repeat(6,1fr);gap:4px;margin:6px 0}
.count{text-align:center;border-radius:6px;padding:4px 0;background:#f2f4f7}.count b{display:block;font-size:17px}
.count span{font-size:11px;color:var(--muted)}.count.zero b{color:#98a2b3}
.count.added b{color:var(--add)}.count.changed b{color:var(--chg)}.count.removed b{color:var(--rem)}
.count.retry b{color:var(--ret)}.count.invalid b{color:var(--inv)}.count.zero b{color:#98a2b3}
.matches{margin-left:auto;color:var(--muted)}.matches b{color:var(--fg)}
.cost{margin:4px 0;color:var(--muted)}.cost b{color:var(--fg)}
.guards{margin:4px 0;padding-left:18px}.guards .ok{color:var(--add)}.guards .bad{color:var(--rem);font-weight:700}
.note{margin:4px 0;color:var(--chg)}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:12px 0}
.bar{display:grid;grid-template-columns:220px 1fr 150px;align-items:center;gap:8px;margin:2px 0}
.bar .name{color:var(--fg);text-decoration:none;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar .name:hover{text-decoration:underline}
.track{display:flex;height:14px;background:#f2f4f7;border-radius:3px;overflow:hidden}
.fill{background:var(--bar);height:100%}.fill.null{background:var(--null)}.bar .num{color:var(--muted)}
.hists{display:flex;flex-wrap:wrap;gap:16px}.hist{margin:0}.hist figcaption{font-size:12px;margin-bottom:4px}
.hist rect{fill:var(--bar)}.hist rect:hover{fill:var(--null)}.hist .zero{stroke:var(--rem);stroke-dasharray:3 2}
.axis{display:flex;justify-content:space-between;width:300px;font-size:11px;color:var(--muted)}
.controls{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin:8px 0}
.controls input{flex:1;min-width:220px;padding:6px 8px;border:1px solid var(--line);border-radius:6px}
.controls select{padding:6px;border:1px solid var(--line);border-radius:6px;background:#fff}
table{width:100%;border-collapse:collapse;table-layout:fixed}th,td{text-align:left;padding:5px 6px;
border-bottom:1px solid var(--line);vertical-align:top;overflow:hidden;text-overflow:ellipsis}
th{font-size:12px;color:var(--muted);font-weight:600}th:nth-child(1){width:170px}th:nth-child(2){width:80px}
th:nth-child(3){width:130px}th:nth-child(5){width:38%}
td.payload code,td.change{white-space:nowrap}tr.row{cursor:pointer}tr.row:hover{background:#f9fafb}
.op{font-weight:700}.op.added{color:var(--add)}.op.changed{color:var(--chg)}.op.removed{color:var(--rem)}
.op.retry{color:var(--ret)}.op.invalid{color:var(--inv)}.old{color:var(--rem)}.new{color:var(--add)}
tr.detail td{background:#f9fafb}tr.detail pre{margin:0;white-space:pre-wrap;word-break:break-all;
font:12px ui-monospace,Menlo,monospace}
.pager{display:flex;gap:12px;align-items:center;justify-content:flex-end;margin-top:8px}
.pager button{padding:4px 10px;border:1px solid var(--line);border-radius:6px;background:#fff;cursor:pointer}
.pager button:disabled{opacity:.4;cursor:default}
"""

JS = r"""
(function(){
'use strict';
var data=JSON.parse(document.getElementById('reflow-data').textContent);
var rows=data.rows, size=data.page_size, page=0, shown=rows;
var $=function(id){return document.getElementById(id);};
var q=$('q'), fs=$('f-sync'), fo=$('f-op'), ff=$('f-field');
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c];});}
function js(v){return v===undefined?'null':JSON.stringify(v);}
function cut(s,n){return s.length>n?s.slice(0,n-1)+'\u2026':s;}
function change(r){
  if(r.o==='changed'||(r.c&&r.c.length)){
    var cs=r.c.slice(), pick=ff.value, at=cs.indexOf(pick); if(at>0){cs.splice(at,1);cs.unshift(pick);}
    return cs.map(function(f){var d=r.v[f]||{};return esc(f)+' <span class="old">'+esc(cut(js(d.old),28))+
      '</span> \u2192 <span class="new">'+esc(cut(js(d.new),28))+'</span>';}).join(', ');}
  var v=r.v||{};return esc(cut(Object.keys(v).map(function(k){return k+'='+js(v[k]);}).join(', '),160));
}
function text(r){if(r._t===undefined){r._t=(r.s+' '+r.k+' '+r.o+' '+JSON.stringify(r.v)+' '+JSON.stringify(r.p)+' '+(r.r||'')).toLowerCase();}return r._t;}
function apply(){
  var t=q.value.trim().toLowerCase(), s=fs.value, o=fo.value, f=ff.value;
  shown=rows.filter(function(r){return (!s||r.s===s)&&(!o||r.o===o)&&(!f||(r.c&&r.c.indexOf(f)>=0))&&(!t||text(r).indexOf(t)>=0);});
  page=0; draw(); saveHash();
}
function draw(){
  var pages=Math.max(1,Math.ceil(shown.length/size)); if(page>=pages){page=pages-1;}
  var out=[], start=page*size;
  shown.slice(start,start+size).forEach(function(r,i){
    var p=r.p?JSON.stringify(r.p):'(nothing sent'+(r.r?': '+r.r:'')+')';
    out.push('<tr class="row" data-i="'+(start+i)+'" data-sync="'+esc(r.s)+'" data-op="'+esc(r.o)+'" data-key="'+esc(r.k)+
      '" data-fields="'+esc((r.c||[]).join(' '))+'"><td>'+esc(r.s)+'</td><td class="op '+esc(r.o)+'">'+esc(r.o)+
      '</td><td><code>'+esc(r.k)+'</code></td><td class="change">'+change(r)+'</td><td class="payload"><code>'+
      esc(cut(p,120))+'</code></td></tr>');
  });
  if(!out.length){out.push('<tr><td colspan="5" class="hint">no rows match</td></tr>');}
  $('rows').innerHTML=out.join('');
  $('match-count').textContent=shown.length.toLocaleString('en-US');
  $('page-info').textContent='page '+(page+1)+' of '+pages;
  $('prev').disabled=page===0; $('next').disabled=page>=pages-1;
}
function detail(tr){
  var next=tr.nextSibling;
  if(next&&next.className==='detail'){next.parentNode.removeChild(next);return;}
  var r=shown[+tr.getAttribute('data-i')];
  var d=document.createElement('tr'); d.className='detail';
  d.innerHTML='<td colspan="2">'+(r.r?'<b>reason</b><pre>'+esc(r.r)+'</pre>':'')+'<b>status</b><pre>'+esc(r.st)+
    '</pre><b>data points</b><pre>'+esc(r.dp)+'</pre></td><td colspan="2"><b>'+(r.o==='changed'?'old \u2192 new':'values')+
    '</b><pre>'+esc(JSON.stringify(r.v,null,2))+'</pre></td><td><b>payload'+(r.ch?' ('+esc(r.ch)+')':'')+'</b><pre>'+
    esc(r.p?JSON.stringify(r.p,null,2):'nothing sent')+'</pre></td>';
  tr.parentNode.insertBefore(d,tr.nextSibling);
}
function readHash(){
  var m=/(?:^#|&)filter=([^&]*)/.exec(location.hash); q.value=''; fs.value=''; fo.value=''; ff.value='';
  if(!m){return;}
  decodeURIComponent(m[1]).split(',').forEach(function(part){
    var i=part.indexOf(':'); if(i<0){return;} var k=part.slice(0,i), v=part.slice(i+1);
    if(k==='q'){q.value=v;} else if(k==='sync'){fs.value=v;} else if(k==='op'){fo.value=v;}
    else if(k==='field'){ff.value=v; if(ff.value!==v){var o=document.createElement('option');o.value=v;o.textContent=v;ff.appendChild(o);ff.value=v;}}
  });
}
var writing=false;
function saveHash(){
  var parts=[]; if(fs.value){parts.push('sync:'+fs.value);} if(fo.value){parts.push('op:'+fo.value);}
  if(ff.value){parts.push('field:'+ff.value);} if(q.value.trim()){parts.push('q:'+q.value.trim());}
  var h=parts.length?'#filter='+encodeURIComponent(parts.join(',')).replace(/%3A/g,':').replace(/%2C/g,','):'';
  if(h!==location.hash&&!(h===''&&!location.hash)){writing=true;history.replaceState(null,'',h||location.pathname+location.search);writing=false;}
}
q.addEventListener('input',apply); [fs,fo,ff].forEach(function(el){el.addEventListener('change',apply);});
$('prev').addEventListener('click',function(){page--;draw();});
$('next').addEventListener('click',function(){page++;draw();});
$('rows').addEventListener('click',function(e){var tr=e.target.closest('tr.row'); if(tr){detail(tr);}});
window.addEventListener('hashchange',function(){if(!writing){readHash();apply();}});
readHash(); apply();
})();
"""
