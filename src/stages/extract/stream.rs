//! One stream's pagination loop: fetch a page, parse it, work out where the stream continues
//! (next page number or next link), hand the page to the sink, until the stream ends, a
//! request is given up on, the credential is rejected, or the pass is cancelled.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{ExtractConfig, PaginationMode};
use super::http::{FetchError, HttpSource};
use super::page::{parse_page, ParsedPage};
use super::sink::{Msg, PageOut};
use super::source::{self, Position, Stream};
use super::FailedRequest;

/// What every stream fetcher of a run shares: the config, the HTTP client, and the parsed
/// field paths.
pub(super) struct Ctx {
    pub(super) cfg: ExtractConfig,
    pub(super) http: HttpSource,
    pub(super) records_path: Vec<String>,
    pub(super) key_path: Vec<String>,
    pub(super) next_field: Option<Vec<String>>,
}

pub(super) enum StreamEnd {
    Done,
    Failed(FailedRequest),
    Rejected { status: u16, url: String },
    Cancelled,
}

/// A fetched page: the parsed body, the `Link` header, when it was fetched.
type Fetched = (ParsedPage, Option<String>, DateTime<Utc>);

/// Fetches one stream from `pos` to its end, sending every page to the sink.
pub(super) async fn run_stream(
    ctx: &Ctx,
    stream: &Stream,
    mut pos: Position,
    mut pages_done: u64,
    tx: &mpsc::Sender<Msg>,
    cancel: &CancellationToken,
) -> StreamEnd {
    let id: Arc<str> = Arc::from(stream.id.as_str());
    loop {
        let url = match source::position_url(&ctx.cfg, stream, &pos) {
            Ok(Some(u)) => u,
            Ok(None) => return StreamEnd::Done,
            Err(reason) => {
                return StreamEnd::Failed(FailedRequest {
                    stream: stream.id.clone(),
                    url: ctx.http.auth.redact(&stream.url),
                    attempts: 0,
                    reason,
                })
            }
        };
        let shown = ctx.http.auth.redact(url.as_str());
        let max = ctx.cfg.pagination.max_pages;
        if max > 0 && pages_done >= max {
            return max_pages_reached(&id, shown, max, tx).await;
        }
        let (page, link, fetched_at) = match fetch_page(ctx, stream, &id, &url, cancel).await {
            Ok(v) => v,
            Err(end) => return end,
        };
        let next = match next_position(ctx, &id, &pos, &url, &page, link) {
            Ok(next) => next,
            Err(reason) => {
                return StreamEnd::Failed(FailedRequest {
                    stream: stream.id.clone(),
                    url: shown,
                    attempts: 1,
                    reason,
                })
            }
        };
        let done = next == Position::Done;
        let out = PageOut {
            stream: id.clone(),
            url: shown,
            fetched_at,
            page,
            next: next.clone(),
        };
        if tx.send(Msg::Page(out)).await.is_err() {
            return StreamEnd::Cancelled;
        }
        pages_done += 1;
        if done {
            return StreamEnd::Done;
        }
        pos = next;
    }
}

/// The `max_pages` safety stop: an empty page that marks the stream done.
async fn max_pages_reached(
    id: &Arc<str>,
    shown: String,
    max: u64,
    tx: &mpsc::Sender<Msg>,
) -> StreamEnd {
    tracing::warn!(stream = %id, max_pages = max, "extract.pagination.max_pages reached; stream ends here");
    let out = PageOut {
        stream: id.clone(),
        url: shown,
        fetched_at: Utc::now(),
        page: Default::default(),
        next: Position::Done,
    };
    match tx.send(Msg::Page(out)).await {
        Ok(()) => StreamEnd::Done,
        Err(_) => StreamEnd::Cancelled,
    }
}

/// Fetches and parses the page at `url`; a request given up on ends the stream.
async fn fetch_page(
    ctx: &Ctx,
    stream: &Stream,
    id: &Arc<str>,
    url: &Url,
    cancel: &CancellationToken,
) -> Result<Fetched, StreamEnd> {
    let fetched = ctx
        .http
        .fetch(url, &stream.id, cancel, |ans| {
            let page = parse_page(
                ans.body,
                &ctx.records_path,
                &ctx.key_path,
                ctx.next_field.as_deref(),
            )
            .map_err(|e| e.to_string())?;
            Ok((page, ans.link, ans.fetched_at))
        })
        .await;
    match fetched {
        Ok(v) => Ok(v),
        Err(FetchError::Cancelled) => Err(StreamEnd::Cancelled),
        Err(FetchError::Rejected { status, url }) => Err(StreamEnd::Rejected { status, url }),
        Err(FetchError::Failed {
            url,
            attempts,
            reason,
        }) => {
            tracing::error!(stream = %id, url = %url, attempts, reason = %reason, "request failed; stream stops for this run");
            Err(StreamEnd::Failed(FailedRequest {
                stream: stream.id.clone(),
                url,
                attempts,
                reason,
            }))
        }
    }
}

/// Where the stream continues after `page` (fetched from `url` at `pos`). `Err`: the next
/// link cannot be resolved (the reason, redacted).
fn next_position(
    ctx: &Ctx,
    id: &Arc<str>,
    pos: &Position,
    url: &Url,
    page: &ParsedPage,
    link: Option<String>,
) -> Result<Position, String> {
    let next = match (&ctx.cfg.pagination.mode, pos) {
        (PaginationMode::Page, Position::Page(n)) => {
            if page.elements() == 0 {
                Position::Done
            } else {
                Position::Page(n + 1)
            }
        }
        (PaginationMode::NextLink, _) => {
            let target = match &ctx.next_field {
                Some(_) => page.next_link.clone(),
                None => link.as_deref().and_then(source::link_header_next),
            };
            match target {
                None => Position::Done,
                Some(t) => match source::resolve_link(url, &t) {
                    Ok(u) => {
                        let u = ctx.http.auth.strip(&u);
                        if u == *url {
                            tracing::warn!(stream = %id, "next link points at the same page; stream ends");
                            Position::Done
                        } else {
                            Position::Url(u.to_string())
                        }
                    }
                    Err(reason) => return Err(ctx.http.auth.redact(&reason)),
                },
            }
        }
        _ => Position::Done,
    };
    Ok(next)
}
