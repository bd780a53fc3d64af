//! The reminders worker: reminder email (and webhook posts) at the right
//! moment, exactly once. This folder holds delivery so far: the notification a
//! sender is given and its classified outcome, templates, signed unsubscribe
//! links, the SMTP/file mailer, the webhook, and the `[reminders]` config.

pub mod config;
pub mod mailer;
pub mod notification;
pub mod relay;
pub mod template;
pub mod unsubscribe;
pub mod webhook;
