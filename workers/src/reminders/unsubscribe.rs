//! Signed one-click unsubscribe links (RFC 8058).
//!
//! Each reminder email carries `List-Unsubscribe: <https://…/unsubscribe?…>`
//! and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`: a mail client may
//! then unsubscribe with one POST to that URL, without the user opening a page.
//! The URL names the user and the channel and carries an HMAC-SHA256 of both
//! under `reminders.unsubscribe_secret`, so whoever serves the endpoint can
//! check that taskstream made the link without storing any token, and nobody
//! can unsubscribe another user by editing the query.
//!
//! Signed message: `taskstream-unsubscribe:v1:<len(user_id)>:<user_id>:<channel>`
//! (the length makes user id and channel unambiguous whatever they contain);
//! the signature is lowercase hex in the `sig` parameter. Links do not
//! expire (a reminder may sit in an inbox for months); a new secret makes
//! every older link invalid.
//!
//! The endpoint ([`routes`], served by the worker on the metrics server at
//! the path of `reminders.unsubscribe_url`):
//! - `POST` with the body `List-Unsubscribe=One-Click` (form-urlencoded or
//!   multipart, as mail clients send it) checks the signature and records the
//!   unsubscribe in the user directory ([`UserDirectory::unsubscribe_op`]):
//!   `200` and one line of text. Reminder email to that user then ends as
//!   `notification.failed` with reason `unsubscribed`.
//! - `GET` changes nothing (mail scanners and link previews fetch every
//!   link): a small page with a button that POSTs the same request.
//! - A missing, tampered or foreign signature: `403` with a fixed text (the
//!   reason is logged, never the secret); another body: `400`; the state
//!   store down: `503` (the mail client may retry).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use hmac::{Hmac, Mac};
use pipelines::Ctx;
use sha2::Sha256;
use url::Url;

use super::directory::UserDirectory;
use super::metrics;
use super::notification::Channel;

type HmacSha256 = Hmac<Sha256>;

/// RFC 8058's fixed second header.
pub const LIST_UNSUBSCRIBE_POST: &str = "List-Unsubscribe=One-Click";

/// Why an unsubscribe link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsubscribeError {
    #[error("unsubscribe link {url:?} is not a URL: {reason}")]
    NotAUrl { url: String, reason: String },
    #[error("unsubscribe link lacks the `{param}` parameter")]
    Missing { param: &'static str },
    #[error("unsubscribe link names unknown channel {channel:?}")]
    UnknownChannel { channel: String },
    #[error("unsubscribe link for user {user_id:?} has a wrong signature")]
    BadSignature { user_id: String },
    #[error("unsubscribe link points to {url:?}, not to this endpoint")]
    WrongEndpoint { url: String },
    #[error("reminders.unsubscribe_secret cannot key HMAC-SHA256: {reason}")]
    Key { reason: String },
}

/// Who asked to unsubscribe from what: a verified link's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeRequest {
    pub user_id: String,
    pub channel: Channel,
}

/// Makes and checks unsubscribe links.
#[derive(Clone)]
pub struct UnsubscribeLinks {
    /// The MAC keyed with the secret; cloned for each link.
    keyed: HmacSha256,
    endpoint: Url,
}

impl std::fmt::Debug for UnsubscribeLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsubscribeLinks")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl UnsubscribeLinks {
    /// Links to `<link_base>/unsubscribe`, signed with `secret`.
    pub fn new(secret: &[u8], link_base: &Url) -> Result<Self, UnsubscribeError> {
        let mut endpoint = link_base.clone();
        if let Ok(mut segments) = endpoint.path_segments_mut() {
            segments.pop_if_empty().push("unsubscribe");
        }
        Self::at(secret, &endpoint)
    }

    /// Links to exactly `endpoint` (`reminders.unsubscribe_url`), signed
    /// with `secret`.
    pub fn at(secret: &[u8], endpoint: &Url) -> Result<Self, UnsubscribeError> {
        let keyed = HmacSha256::new_from_slice(secret).map_err(|e| UnsubscribeError::Key {
            reason: e.to_string(),
        })?;
        let mut endpoint = endpoint.clone();
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        Ok(UnsubscribeLinks { keyed, endpoint })
    }

    /// The endpoint links point to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The signed link for a user and channel.
    pub fn link(&self, user_id: &str, channel: Channel) -> String {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("user", user_id)
            .append_pair("channel", channel.as_str())
            .append_pair("sig", &self.sign(user_id, channel));
        url.to_string()
    }

    /// The two RFC 8058 headers, name and value, for a user and channel.
    pub fn headers(&self, user_id: &str, channel: Channel) -> [(&'static str, String); 2] {
        [
            (
                "List-Unsubscribe",
                format!("<{}>", self.link(user_id, channel)),
            ),
            ("List-Unsubscribe-Post", LIST_UNSUBSCRIBE_POST.to_string()),
        ]
    }

    /// Checks a link (as received by the endpoint) and returns whom it unsubscribes.
    pub fn verify_link(&self, link: &str) -> Result<UnsubscribeRequest, UnsubscribeError> {
        let url = Url::parse(link).map_err(|e| UnsubscribeError::NotAUrl {
            url: link.to_string(),
            reason: e.to_string(),
        })?;
        let mut bare = url.clone();
        bare.set_query(None);
        bare.set_fragment(None);
        if bare != self.endpoint {
            return Err(UnsubscribeError::WrongEndpoint {
                url: bare.to_string(),
            });
        }
        self.verify_query(url.query().unwrap_or_default())
    }

    /// Checks the query of a request the endpoint received (what follows
    /// `?`; the endpoint's public host and path are the router's business).
    pub fn verify_query(&self, query: &str) -> Result<UnsubscribeRequest, UnsubscribeError> {
        let param = |name: &'static str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .ok_or(UnsubscribeError::Missing { param: name })
        };
        let user_id = param("user")?;
        let channel_text = param("channel")?;
        let sig = param("sig")?;
        let channel = Channel::parse(&channel_text).ok_or(UnsubscribeError::UnknownChannel {
            channel: channel_text,
        })?;
        self.verify(&user_id, channel, &sig)?;
        Ok(UnsubscribeRequest { user_id, channel })
    }

    /// Checks one signature, in constant time.
    pub fn verify(
        &self,
        user_id: &str,
        channel: Channel,
        sig: &str,
    ) -> Result<(), UnsubscribeError> {
        let bad = || UnsubscribeError::BadSignature {
            user_id: user_id.to_string(),
        };
        let sig = hex::decode(sig).map_err(|_| bad())?;
        self.mac(user_id, channel)
            .verify_slice(&sig)
            .map_err(|_| bad())
    }

    fn sign(&self, user_id: &str, channel: Channel) -> String {
        hex::encode(self.mac(user_id, channel).finalize().into_bytes())
    }

    fn mac(&self, user_id: &str, channel: Channel) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(b"taskstream-unsubscribe:v1:");
        mac.update(user_id.len().to_string().as_bytes());
        mac.update(b":");
        mac.update(user_id.as_bytes());
        mac.update(b":");
        mac.update(channel.as_str().as_bytes());
        mac
    }
}

/// The endpoint's routes at the path of `links`' endpoint (see the module
/// doc), writing through `ctx`'s state store.
pub fn routes(links: &UnsubscribeLinks, ctx: &Ctx) -> axum::Router {
    let path = links.endpoint().path().to_owned();
    let endpoint = Arc::new(Endpoint {
        links: links.clone(),
        ctx: ctx.clone(),
    });
    axum::Router::new()
        .route(&path, axum::routing::get(confirm_page).post(one_click))
        .with_state(endpoint)
}

struct Endpoint {
    links: UnsubscribeLinks,
    ctx: Ctx,
}

impl Endpoint {
    /// The verified request, or `None` (logged and counted) when refused.
    fn verify(&self, query: Option<&str>) -> Option<UnsubscribeRequest> {
        self.links
            .verify_query(query.unwrap_or_default())
            .map_err(|e| {
                tracing::warn!(error = %e, "unsubscribe request refused");
                metrics::unsubscribe_refused();
            })
            .ok()
    }
}

/// `403` naming nothing secret.
fn refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "This unsubscribe link is not valid: it was changed or has been replaced.\n",
    )
        .into_response()
}

/// `GET`: never unsubscribes; offers a button that does.
async fn confirm_page(State(e): State<Arc<Endpoint>>, RawQuery(query): RawQuery) -> Response {
    if e.verify(query.as_deref()).is_none() {
        return refused();
    }
    let action = format!(
        "?{}",
        minijinja::HtmlEscape(query.as_deref().unwrap_or_default())
    );
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\n\
         <body><p>Stop receiving reminder email?</p>\n\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form></body></html>\n"
    ))
    .into_response()
}

/// `POST` (RFC 8058): records the unsubscribe.
async fn one_click(
    State(e): State<Arc<Endpoint>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(request) = e.verify(query.as_deref()) else {
        return refused();
    };
    if !is_one_click(&body) {
        return (
            StatusCode::BAD_REQUEST,
            "Expected the body List-Unsubscribe=One-Click (RFC 8058).\n",
        )
            .into_response();
    }
    let op = UserDirectory::unsubscribe_op(&request.user_id, request.channel, e.ctx.now());
    if let Err(err) = e.ctx.state().apply(&[op]).await {
        tracing::warn!(error = %err, "cannot record an unsubscribe now");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Unsubscribing is not possible right now; please try again later.\n",
        )
            .into_response();
    }
    tracing::info!(user = %request.user_id, channel = %request.channel, "unsubscribed by one-click link");
    metrics::unsubscribed(request.channel.as_str());
    (
        StatusCode::OK,
        "You are unsubscribed: no more reminder email will be sent to you.\n",
    )
        .into_response()
}

/// The RFC 8058 body, form-urlencoded or as a multipart form field.
fn is_one_click(body: &[u8]) -> bool {
    if url::form_urlencoded::parse(body).any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click") {
        return true;
    }
    let text = String::from_utf8_lossy(body);
    text.contains("name=\"List-Unsubscribe\"") && text.contains("One-Click")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_click_body_is_recognised_in_both_encodings() {
        assert!(is_one_click(b"List-Unsubscribe=One-Click"));
        assert!(is_one_click(
            b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n"
        ));
        assert!(!is_one_click(b""));
        assert!(!is_one_click(b"List-Unsubscribe=Maybe"));
    }

    fn links() -> UnsubscribeLinks {
        UnsubscribeLinks::new(
            b"0123456789abcdef-test-secret",
            &Url::parse("https://app.example.com/base/").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_link_verifies_and_names_user_and_channel() {
        let l = links();
        let link = l.link("user 1&x=y", Channel::Email);
        assert!(
            link.starts_with(
                "https://app.example.com/base/unsubscribe?user=user+1%26x%3Dy&channel=email&sig="
            ),
            "{link}"
        );
        assert_eq!(
            l.verify_link(&link).unwrap(),
            UnsubscribeRequest {
                user_id: "user 1&x=y".into(),
                channel: Channel::Email
            }
        );
    }

    #[test]
    fn a_tampered_link_fails() {
        let l = links();
        let link = l.link("u1", Channel::Email);
        let other_user = link.replace("user=u1", "user=u2");
        assert!(matches!(
            l.verify_link(&other_user),
            Err(UnsubscribeError::BadSignature { .. })
        ));
        let other_channel = link.replace("channel=email", "channel=sms");
        assert!(matches!(
            l.verify_link(&other_channel),
            Err(UnsubscribeError::BadSignature { .. })
        ));
        let sig_at = link.find("sig=").unwrap() + 4;
        let mut flipped = link.clone();
        let c = if &link[sig_at..sig_at + 1] == "0" {
            "1"
        } else {
            "0"
        };
        flipped.replace_range(sig_at..sig_at + 1, c);
        assert!(l.verify_link(&flipped).is_err());
        let no_sig = &link[..link.find("&sig=").unwrap()];
        assert_eq!(
            l.verify_link(no_sig),
            Err(UnsubscribeError::Missing { param: "sig" })
        );
        assert!(l.verify_link(&link.replace("sig=", "sig=zz")).is_err());
    }

    #[test]
    fn another_secret_or_endpoint_refuses_the_link() {
        let link = links().link("u1", Channel::Email);
        let other = UnsubscribeLinks::new(
            b"another-secret-of-some-length",
            &Url::parse("https://app.example.com/base/").unwrap(),
        )
        .unwrap();
        assert!(other.verify_link(&link).is_err());
        let moved = link.replace("app.example.com", "evil.example.com");
        assert!(matches!(
            links().verify_link(&moved),
            Err(UnsubscribeError::WrongEndpoint { .. })
        ));
    }

    #[test]
    fn user_and_channel_boundaries_cannot_be_shifted() {
        let l = links();
        // Same concatenation, different split: different signatures.
        assert_ne!(l.sign("ab", Channel::Email), l.sign("a", Channel::Email));
        let sig = l.sign("u1", Channel::Email);
        assert!(l.verify("u1", Channel::Email, &sig).is_ok());
        assert!(l.verify("u1:email", Channel::Email, &sig).is_err());
    }

    #[test]
    fn headers_follow_rfc_8058() {
        let [(n1, v1), (n2, v2)] = links().headers("u1", Channel::Email);
        assert_eq!(n1, "List-Unsubscribe");
        assert!(
            v1.starts_with("<https://app.example.com/base/unsubscribe?"),
            "{v1}"
        );
        assert!(v1.ends_with('>'));
        assert_eq!(n2, "List-Unsubscribe-Post");
        assert_eq!(v2, "List-Unsubscribe=One-Click");
    }
}
