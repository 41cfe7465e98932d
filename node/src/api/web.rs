//! The web status page at `/`: what `labmesh status` shows, server-rendered (no external
//! assets, no build step), readable on a phone. `GET /v1/events/stream` is a server-sent event
//! stream: every newly stored event (unnamed SSE events, the event's JSON as data) and, every
//! few seconds, a `status` event carrying the `/v1/status` document. The page's inline script
//! listens to it and re-fetches the rendered fragment (`/fragment/status`).
//!
//! Everything taken from events or gossip (node, service and incident names) is HTML-escaped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::api::ApiState;
use crate::status::{Table, model, text};

/// How often the stream sends a `status` event.
pub const STATUS_EVERY: Duration = Duration::from_secs(3);

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub async fn index(State(state): State<Arc<ApiState>>) -> Html<String> {
    let status = crate::api::status::build(&state).await;
    Html(page(&status))
}

pub async fn fragment(State(state): State<Arc<ApiState>>) -> Html<String> {
    let status = crate::api::status::build(&state).await;
    Html(render(&status))
}

/// What one event stream holds between two SSE events.
struct StreamState {
    state: Arc<ApiState>,
    rx: Option<broadcast::Receiver<Arc<sync::StoredEvent>>>,
    tick: tokio::time::Interval,
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

/// `GET /v1/events/stream`.
pub async fn stream(
    State(state): State<Arc<ApiState>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let init = StreamState {
        rx: state.events.as_ref().map(|bus| bus.watch()),
        stopping: state.stopping.clone(),
        state,
        tick,
    };
    let stream = futures_util::stream::unfold(init, |mut st| async move {
        let event = next_event(&mut st).await?;
        Some((Ok(event), st))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The next SSE event: a newly stored event or a periodic status; `None` ends the stream
/// (the agent is stopping).
async fn next_event(st: &mut StreamState) -> Option<SseEvent> {
    loop {
        let stop = async {
            match st.stopping.as_mut() {
                Some(s) => {
                    let _ = s.wait_for(|stop| *stop).await;
                }
                None => std::future::pending().await,
            }
        };
        let received = async {
            match st.rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        return Some(tokio::select! {
            _ = stop => return None,
            r = received => match r {
                Ok(stored) => match event_json(&stored.bytes) {
                    Some(doc) => SseEvent::default().data(doc),
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = st.tick.tick() => {
                let doc = crate::api::status::build(&st.state).await;
                SseEvent::default().event("status").data(doc.to_string())
            }
        });
    }
}

/// The stored event as one line of JSON (the file is one already; this drops a trailing
/// newline or spacing a hand-written file may have).
fn event_json(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .map(|v| v.to_string())
}

/// A table whose cells carry their column title (`data-label`), so that on a narrow screen
/// every row becomes a card of `title: value` lines. Cells are escaped here; a cell's tone
/// becomes its class.
fn table(t: &Table) -> String {
    let mut html = format!("<table id=\"{}\"><thead><tr>", esc(t.id));
    for h in &t.header {
        html.push_str(&format!("<th>{}</th>", esc(h)));
    }
    html.push_str("</tr></thead><tbody>");
    for cells in &t.rows {
        html.push_str("<tr>");
        for (i, cell) in cells.iter().enumerate() {
            let class = match cell.tone.class() {
                "" => String::new(),
                c => format!(" class=\"{c}\""),
            };
            let label = t.header.get(i).copied().unwrap_or_default();
            html.push_str(&format!(
                "<td data-label=\"{}\"{class}>{}</td>",
                esc(label),
                esc(&cell.text)
            ));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

/// The page body without the shell: what the script swaps in on each refresh.
pub fn render(status: &Value) -> String {
    let m = model(status);
    let mut html = format!(
        "<p class=\"meta\">mesh <b>{}</b> · answered by <b>{}</b> · labmesh {} · {} events stored</p>",
        esc(&m.mesh),
        esc(&m.node),
        esc(&m.version),
        esc(&m.events),
    );
    html.push_str(&format!("<h2>{}</h2>", esc(m.nodes.title)));
    html.push_str(&table(&m.nodes));
    for section in &m.sections {
        html.push_str(&format!("<h2>{}</h2>", esc(section.title)));
        if section.rows.is_empty() {
            html.push_str(&format!(
                "<p class=\"none\" id=\"{}\">none</p>",
                esc(section.id)
            ));
        } else {
            html.push_str(&table(section));
        }
    }
    html.push_str(&format!(
        "<p class=\"meta\">refused peers and messages: {}</p>",
        esc(&m.refused)
    ));
    html
}

const STYLE: &str = r#"
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:0 1em 2em;max-width:80em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.6em 0 .2em}h2{font-size:1.05em;margin:1.2em 0 .3em}
.meta,#conn{color:#666;font-size:.9em;margin:.2em 0}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e4e4e4;white-space:nowrap}
th{background:#f0f0f0;font-weight:600}
.good{color:#16803c}.warn{color:#a36a00}.bad{color:#c62828;font-weight:600}
.none{color:#16803c}
#live{font:12px/1.4 ui-monospace,monospace;padding-left:1.2em;color:#444}
@media (max-width:700px){
 thead{display:none}table,tbody,tr,td{display:block;width:auto}
 tr{margin:0 0 .7em;border:1px solid #ddd;border-radius:6px;padding:.3em .5em;background:#fff;
  display:grid;grid-template-columns:1fr 1fr;column-gap:.8em}
 td{border:none;padding:.1em 0;white-space:normal;overflow-wrap:anywhere}
 td:first-child{grid-column:1/-1;font-weight:600}td:empty{display:none}
 td::before{content:attr(data-label)": ";color:#777}
}
"#;

const SCRIPT: &str = r#"
(function(){
  var box=document.getElementById('status'),conn=document.getElementById('conn'),
      live=document.getElementById('live'),busy=false,again=false;
  function refresh(){
    if(busy){again=true;return;}
    busy=true;
    fetch('/fragment/status').then(function(r){return r.ok?r.text():null;})
      .then(function(t){if(t!==null){box.innerHTML=t;}})
      .catch(function(){})
      .then(function(){busy=false;if(again){again=false;refresh();}});
  }
  if(!window.EventSource){return;}
  var es=new EventSource('/v1/events/stream');
  es.onopen=function(){conn.textContent='live';};
  es.onerror=function(){conn.textContent='reconnecting…';};
  es.addEventListener('status',function(){
    conn.textContent='live · updated '+new Date().toLocaleTimeString();refresh();
  });
  es.onmessage=function(m){
    try{
      var e=JSON.parse(m.data),li=document.createElement('li');
      li.textContent=[e.timestamp,e.node,e.type,e.severity,e.service].filter(Boolean).join('  ');
      live.insertBefore(li,live.firstChild);
      while(live.children.length>20){live.removeChild(live.lastChild);}
    }catch(_){}
    refresh();
  };
})();
"#;

/// The whole page.
pub fn page(status: &Value) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>labmesh · {mesh}</title><style>{STYLE}</style></head><body>\
<h1>labmesh</h1><p id=\"conn\">connecting…</p><div id=\"status\">{body}</div>\
<h2>Latest events</h2><ul id=\"live\"></ul><script>{SCRIPT}</script></body></html>",
        mesh = esc(&text(status, "mesh")),
        body = render(status),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_from_events_are_escaped() {
        let status = json!({
            "mesh": "home", "node": "alpha",
            "nodes": [{"node": "<b>x</b>", "liveness": "alive", "alerter": true,
                       "summary": {"score": 90, "gpus": 0}}],
            "services_unhealthy": [{"service": "a\"b", "node": "n", "status": "unhealthy"}],
            "incidents_open": [{"service": "<script>alert(1)</script>", "severity": "error"}],
            "deployments_recent": [],
        });
        let html = page(&status);
        assert!(!html.contains("<b>x</b>") && html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!html.contains("<script>alert(1)"));
        assert!(html.contains("a&quot;b"));
        assert!(html.contains("class=\"good\">90</td>"), "{html}");
        assert!(html.contains("<p class=\"none\" id=\"deployments\">none</p>"));
        assert_eq!(esc("&'"), "&amp;&#39;");
    }
}
