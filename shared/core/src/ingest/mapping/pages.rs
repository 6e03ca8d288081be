//! Page and screen calls: a page viewed (a screen as the page
//! `/screens/<name>`).

use super::read::{session, utm};
use super::Mapped;
use crate::customer::activity::{ActivityEvent, PageViewed};
use crate::ingest::message::{Rejection, SegmentMessage};

/// A page call: its `url` (else the context's, else a path).
pub(super) fn page(m: &SegmentMessage, late: bool) -> Result<Mapped, Rejection> {
    let url = m
        .property_text("url")
        .or_else(|| m.context_text(&["page", "url"]))
        .or_else(|| m.property_text("path"))
        .or_else(|| m.context_text(&["page", "path"]))
        .ok_or_else(|| Rejection::new("properties.url", "is required (or context.page.url)"))?;
    Ok(Mapped::Activity(ActivityEvent::PageViewed(PageViewed {
        url,
        title: m.property_text("title").or_else(|| m.name.clone()),
        referrer: m
            .property_text("referrer")
            .or_else(|| m.context_text(&["page", "referrer"]))
            .filter(|r| r.starts_with("http://") || r.starts_with("https://") || r.starts_with('/')),
        session_id: session(m),
        utm: utm(m),
        late,
    })))
}

/// A screen call: the page `/screens/<name as a slug>`.
pub(super) fn screen(m: &SegmentMessage, late: bool) -> Mapped {
    let name = m.name.clone().unwrap_or_default();
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    Mapped::Activity(ActivityEvent::PageViewed(PageViewed {
        url: format!("/screens/{slug}"),
        title: Some(name),
        referrer: None,
        session_id: session(m),
        utm: utm(m),
        late,
    }))
}
