//! Message templates: Liquid, HTML-escaped in HTML parts, MJML to HTML, and a
//! text part (ARCHITECTURE.md §8).
//!
//! Every template in [`KNOWN_TEMPLATES`](crate::journey::templates::KNOWN_TEMPLATES) has a folder `templates/<id>/` at the
//! repository root, embedded in the binary:
//!
//! - email: `subject.liquid`, `body.mjml` (MJML with Liquid), `text.liquid`;
//! - SMS: `sms.liquid`;
//! - push: `title.liquid`, `body.liquid`;
//! - every template: `sample.json`, the variables for previews and tests.
//!
//! The variables are one JSON object: `customer` (`first_name`, `last_name`),
//! `data` (the triggering event's data), `message` (`id`), `campaign` (`id`)
//! and `links` (`unsubscribe`, `preferences`, `shop`). `templates/README.md`
//! lists what each template reads.
//!
//! Rules:
//!
//! - **Escaping.** The `liquid` crate never escapes. Before the MJML part is
//!   rendered, every string leaf of the variables is HTML-escaped, so whatever
//!   a customer typed cannot become markup. Subject, text, SMS and push parts
//!   get the values as they are.
//! - **Strict variables.** A variable that is not there fails the message with
//!   [`RenderError::MissingVariable`], naming it; no retry will fix that.
//!   (`{% if x %}` tests presence without failing, for optional values.)
//! - **Parsed once.** Shipped templates are parsed on first use and kept for
//!   the life of the process; a stored version is compiled by
//!   [`compile_template`] and kept by its source (`messaging::templates`).
//! - **Templates as data** (decision 0077): a template stored through the
//!   API is the same parts as owned text ([`TemplateParts`]), compiled and
//!   rendered by the same code; its errors name the part by its field
//!   (`subject`, `mjml`, `text`) instead of its file, and the line.
//! - **Filters.** The standard Liquid library plus `money`:
//!   `{{ data.total_value_minor | money: data.currency }}` formats an amount in
//!   minor units (`5990`, `"EUR"` → `€59.90`).

use crate::consent::Channel;
use crate::failure::{Classify, FailureKind};
use crate::messaging::events::MessageRequest;
use liquid_core::{
    Display_filter, Expression, Filter, FilterParameters, FilterReflection, FromFilterParameters, ParseFilter, Runtime,
    Value as LiquidValue, ValueView,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A rendered message. Email: subject, HTML and text; SMS: text only; push:
/// `subject` is the title and `text` the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: String,
}

/// Why a template did not render. None of these is retryable: the same
/// template with the same variables fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unknown template {0}")]
    UnknownTemplate(String),
    /// A variable the template reads is not there (`variable` is its dotted
    /// path, e.g. `customer.first_name`), in `part`, first read at `line`
    /// (1-based) when it can be found.
    #[error("template {template} needs the variable {variable} ({}{})", .part, at_line(*.line))]
    MissingVariable {
        template: String,
        variable: String,
        part: &'static str,
        line: Option<usize>,
    },
    /// The variables are not a JSON object.
    #[error("template {template}: the variables must be a JSON object")]
    InvalidVariables { template: String },
    /// A part does not parse (Liquid or MJML), or failed while rendering for
    /// another reason than a missing variable (e.g. a filter given text
    /// where it needs a number); `line` (1-based) where it went wrong, when
    /// known (for MJML, the line of the part as rendered with the variables).
    #[error("template {template} ({}{}): {message}", .part, at_line(*.line))]
    Invalid {
        template: String,
        part: &'static str,
        line: Option<usize>,
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

impl RenderError {
    /// Always false: rendering is deterministic.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// Poison, always: the same template with the same variables fails the same way.
impl Classify for RenderError {
    fn kind(&self) -> FailureKind {
        FailureKind::Poison
    }
}

/// The channel a template is written for, or `None` for an unknown id.
pub fn channel_of(template_id: &str) -> Option<Channel> {
    source(template_id).map(|s| s.parts.channel())
}

/// The sample variables of a template (`templates/<id>/sample.json`).
pub fn sample_data(template_id: &str) -> Result<Value, RenderError> {
    let src = source(template_id).ok_or_else(|| RenderError::UnknownTemplate(template_id.to_string()))?;
    serde_json::from_str(src.sample).map_err(|e| RenderError::Invalid {
        template: template_id.to_string(),
        part: "sample.json",
        line: Some(e.line()),
        message: e.to_string(),
    })
}

/// Renders a shipped template with the given variables (a JSON object).
pub fn render(template_id: &str, vars: &Value) -> Result<Rendered, RenderError> {
    render_compiled(shipped_template(template_id)?, vars)
}

/// Renders a compiled template (shipped, or a stored version) with the
/// given variables (a JSON object).
pub fn render_compiled(template: &CompiledTemplate, vars: &Value) -> Result<Rendered, RenderError> {
    let template_id = template.id.as_str();
    if !vars.is_object() {
        return Err(RenderError::InvalidVariables {
            template: template_id.to_string(),
        });
    }
    let plain = to_globals(template_id, vars)?;
    match &template.compiled {
        Compiled::Email { subject, mjml, text } => {
            let escaped = to_globals(template_id, &html_escape_leaves(vars))?;
            let mjml_source = run(template_id, mjml, &escaped)?;
            Ok(Rendered {
                subject: Some(single_line(&run(template_id, subject, &plain)?)),
                html: Some(mjml_to_html(template_id, mjml, &mjml_source)?),
                text: tidy_text(&run(template_id, text, &plain)?),
            })
        }
        Compiled::Sms { text } => Ok(Rendered {
            subject: None,
            html: None,
            text: tidy_text(&run(template_id, text, &plain)?),
        }),
        Compiled::Push { title, body } => Ok(Rendered {
            subject: Some(single_line(&run(template_id, title, &plain)?)),
            html: None,
            text: tidy_text(&run(template_id, body, &plain)?),
        }),
    }
}

/// A subject (an email's subject line, a push's title) in Liquid that
/// replaces the template's: a broadcast's subject-line test (decision
/// 0087). Parsed with the templates' parser, so the same tags, filters and
/// variables; errors name the part `subject`.
pub fn subject_override(template_id: &str, subject: &str) -> Result<SubjectOverride, RenderError> {
    let parser = parser_once()?;
    let template = parser.parse(subject).map_err(|e| {
        let message = e.to_string();
        RenderError::Invalid {
            template: template_id.to_string(),
            part: "subject",
            line: liquid_line(&message, subject),
            message,
        }
    })?;
    Ok(SubjectOverride(Part {
        name: "subject",
        source: subject.to_string(),
        template,
    }))
}

/// A parsed subject override ([`subject_override`]).
pub struct SubjectOverride(Part);

impl SubjectOverride {
    /// The subject for `vars` (the variables the template renders with),
    /// on one line.
    pub fn render(&self, template_id: &str, vars: &Value) -> Result<String, RenderError> {
        let plain = to_globals(template_id, vars)?;
        Ok(single_line(&run(template_id, &self.0, &plain)?))
    }
}

/// A template's parts as text: what `PUT /templates/{id}` stores (decision
/// 0077). Email: `subject`, `mjml` and `text`; SMS: `text` only; push:
/// `subject` is the title and `text` the body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateParts {
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mjml: Option<String>,
    pub text: String,
}

impl TemplateParts {
    /// The parts as the renderer takes them, or why the channel does not
    /// take this set of parts (naming the part).
    fn as_parts(&self, template_id: &str) -> Result<Parts<'_>, RenderError> {
        let invalid = |part: &'static str, message: &str| RenderError::Invalid {
            template: template_id.to_string(),
            part,
            line: None,
            message: message.to_string(),
        };
        match (self.channel, self.subject.as_deref(), self.mjml.as_deref()) {
            (Channel::Email, Some(subject), Some(mjml)) => Ok(Parts::Email {
                subject,
                mjml,
                text: &self.text,
            }),
            (Channel::Email, None, _) => Err(invalid("subject", "an email template needs a subject")),
            (Channel::Email, _, None) => Err(invalid("mjml", "an email template needs an MJML body")),
            (Channel::Sms, None, None) => Ok(Parts::Sms { text: &self.text }),
            (Channel::Sms, Some(_), _) => Err(invalid("subject", "an SMS has no subject: its text is the message")),
            (Channel::Sms, _, Some(_)) => Err(invalid("mjml", "an SMS has no MJML body: its text is the message")),
            (Channel::Push, Some(title), None) => Ok(Parts::Push {
                title,
                body: &self.text,
            }),
            (Channel::Push, None, _) => Err(invalid("subject", "a push notification needs a subject (its title)")),
            (Channel::Push, _, Some(_)) => Err(invalid(
                "mjml",
                "a push notification has no MJML body: its text is the body",
            )),
        }
    }
}

/// A shipped template's parts and sample variables (`templates/<id>/`).
pub fn shipped_parts(template_id: &str) -> Result<(TemplateParts, Value), RenderError> {
    let src = source(template_id).ok_or_else(|| RenderError::UnknownTemplate(template_id.to_string()))?;
    let parts = match src.parts {
        Parts::Email { subject, mjml, text } => TemplateParts {
            channel: Channel::Email,
            subject: Some(subject.to_string()),
            mjml: Some(mjml.to_string()),
            text: text.to_string(),
        },
        Parts::Sms { text } => TemplateParts {
            channel: Channel::Sms,
            subject: None,
            mjml: None,
            text: text.to_string(),
        },
        Parts::Push { title, body } => TemplateParts {
            channel: Channel::Push,
            subject: Some(title.to_string()),
            mjml: None,
            text: body.to_string(),
        },
    };
    Ok((parts, sample_data(template_id)?))
}

/// A template parsed and ready to render: a shipped one (version 1, until
/// a version is stored) or a stored version.
pub struct CompiledTemplate {
    id: String,
    version: u64,
    compiled: Compiled,
}

impl CompiledTemplate {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version it was compiled from (1 for a shipped template).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn channel(&self) -> Channel {
        match self.compiled {
            Compiled::Email { .. } => Channel::Email,
            Compiled::Sms { .. } => Channel::Sms,
            Compiled::Push { .. } => Channel::Push,
        }
    }
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("channel", &self.channel())
            .finish()
    }
}

/// Compiles version `version` of the template `template_id` from its parts
/// as stored (errors name the parts by their fields: `subject`, `mjml`,
/// `text`).
pub fn compile_template(
    template_id: &str,
    version: u64,
    parts: &TemplateParts,
) -> Result<CompiledTemplate, RenderError> {
    let compiled = compile_parts(
        parser_once()?,
        template_id,
        &parts.as_parts(template_id)?,
        Naming::Fields,
    )?;
    Ok(CompiledTemplate {
        id: template_id.to_string(),
        version,
        compiled,
    })
}

/// A shipped template, compiled once per process (version 1).
pub fn shipped_template(template_id: &str) -> Result<&'static CompiledTemplate, RenderError> {
    compiled(template_id)
}

/// Where a message's links point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// The one-click unsubscribe / preference-centre URL of the recipient.
    pub unsubscribe: String,
    /// The preference centre of the recipient.
    pub preferences: String,
    /// The storefront's base URL (a trailing slash is dropped).
    pub shop: String,
}

/// The variables of a requested message, in the shape every template reads
/// (and every `sample.json` has).
pub fn variables(first_name: &str, last_name: &str, request: &MessageRequest, links: &Links) -> Value {
    json!({
        "customer": { "first_name": first_name, "last_name": last_name },
        "data": request.data,
        "message": { "id": request.message_id },
        "campaign": { "id": request.campaign_id },
        "links": {
            "unsubscribe": links.unsubscribe,
            "preferences": links.preferences,
            "shop": links.shop.trim_end_matches('/'),
        },
    })
}

/// Renders a template with its sample variables, `patch` applied over them
/// as a JSON Merge Patch (RFC 7396: objects merge, `null` removes a key,
/// anything else replaces). What `POST /templates/{id}/preview` shows.
pub fn preview(template_id: &str, patch: Option<&Value>) -> Result<(Channel, Rendered), RenderError> {
    let channel = channel_of(template_id).ok_or_else(|| RenderError::UnknownTemplate(template_id.to_string()))?;
    let mut vars = sample_data(template_id)?;
    if let Some(patch) = patch {
        merge_patch(&mut vars, patch);
    }
    Ok((channel, render(template_id, &vars)?))
}

/// RFC 7396 JSON Merge Patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(s: &str) -> String {
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

// ---------------------------------------------------------------------------
// Sources, embedded.

struct Source {
    id: &'static str,
    parts: Parts<'static>,
    sample: &'static str,
}

enum Parts<'a> {
    Email {
        subject: &'a str,
        mjml: &'a str,
        text: &'a str,
    },
    Sms {
        text: &'a str,
    },
    Push {
        title: &'a str,
        body: &'a str,
    },
}

impl Parts<'_> {
    fn channel(&self) -> Channel {
        match self {
            Parts::Email { .. } => Channel::Email,
            Parts::Sms { .. } => Channel::Sms,
            Parts::Push { .. } => Channel::Push,
        }
    }
}

macro_rules! template_file {
    ($id:literal, $file:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../templates/",
            $id,
            "/",
            $file
        ))
    };
}

macro_rules! email {
    ($id:literal) => {
        Source {
            id: $id,
            parts: Parts::Email {
                subject: template_file!($id, "subject.liquid"),
                mjml: template_file!($id, "body.mjml"),
                text: template_file!($id, "text.liquid"),
            },
            sample: template_file!($id, "sample.json"),
        }
    };
}

macro_rules! sms {
    ($id:literal) => {
        Source {
            id: $id,
            parts: Parts::Sms {
                text: template_file!($id, "sms.liquid"),
            },
            sample: template_file!($id, "sample.json"),
        }
    };
}

macro_rules! push {
    ($id:literal) => {
        Source {
            id: $id,
            parts: Parts::Push {
                title: template_file!($id, "title.liquid"),
                body: template_file!($id, "body.liquid"),
            },
            sample: template_file!($id, "sample.json"),
        }
    };
}

/// Every template, in the order of the registry (a test checks).
static SOURCES: &[Source] = &[
    email!("abandoned-cart-final-offer"),
    email!("abandoned-cart-reminder"),
    email!("browse-abandonment"),
    email!("checkout-abandonment"),
    sms!("checkout-abandonment-sms"),
    email!("consent-renewal"),
    email!("cross-sell-recommendations"),
    email!("email-verification"),
    email!("email-verification-reminder"),
    email!("order-confirmation"),
    email!("order-shipped"),
    push!("order-shipped-push"),
    email!("payment-failed"),
    email!("payment-failed-final-notice"),
    email!("reorder-reminder"),
    email!("review-request"),
    email!("welcome"),
];

fn source(template_id: &str) -> Option<&'static Source> {
    // Only ids of the registry: a source without its registry entry is dead.
    if !crate::journey::templates::is_known(template_id) {
        return None;
    }
    SOURCES.iter().find(|s| s.id == template_id)
}

// ---------------------------------------------------------------------------
// Parsed templates, once per process.

enum Compiled {
    Email { subject: Part, mjml: Part, text: Part },
    Sms { text: Part },
    Push { title: Part, body: Part },
}

/// One part parsed, with its name (for errors) and its text (to find the
/// line of an error that has none).
struct Part {
    name: &'static str,
    source: String,
    template: liquid::Template,
}

/// What errors call the parts: a shipped template's files, or a stored
/// template's fields (`PUT /templates/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    Files,
    Fields,
}

impl Naming {
    fn subject(self) -> &'static str {
        match self {
            Naming::Files => "subject.liquid",
            Naming::Fields => "subject",
        }
    }
    fn mjml(self) -> &'static str {
        match self {
            Naming::Files => "body.mjml",
            Naming::Fields => "mjml",
        }
    }
    fn text(self, file: &'static str) -> &'static str {
        match self {
            Naming::Files => file,
            Naming::Fields => "text",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Naming::Files => "title.liquid",
            Naming::Fields => "subject",
        }
    }
}

type Cache = HashMap<&'static str, Result<CompiledTemplate, RenderError>>;

fn compiled(template_id: &str) -> Result<&'static CompiledTemplate, RenderError> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(compile_all);
    match cache.get(template_id) {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(e.clone()),
        None => Err(RenderError::UnknownTemplate(template_id.to_string())),
    }
}

/// The Liquid parser: the standard tags, blocks and filters except `date`
/// and `strip_html`, plus [`Money`] (decision 0062, "Addendum: HTTP/1.1
/// client, liquid filters"). Those two are what link the regex crates into
/// the functions that render (liquid-core's date-time parsing, liquid-lib's
/// tag stripping, about 0.4 MiB); no shipped template uses them, and a
/// template that did would fail to parse ("Unknown filter").
fn parser() -> Result<liquid::Parser, liquid::Error> {
    use liquid::ParserBuilder;
    use liquid_lib::stdlib;
    ParserBuilder::new()
        .tag(stdlib::AssignTag)
        .tag(stdlib::BreakTag)
        .tag(stdlib::ContinueTag)
        .tag(stdlib::CycleTag)
        .tag(stdlib::IncludeTag)
        .tag(stdlib::IncrementTag)
        .tag(stdlib::DecrementTag)
        .tag(stdlib::RenderTag)
        .block(stdlib::RawBlock)
        .block(stdlib::IfBlock)
        .block(stdlib::UnlessBlock)
        .block(stdlib::IfChangedBlock)
        .block(stdlib::ForBlock)
        .block(stdlib::TableRowBlock)
        .block(stdlib::CommentBlock)
        .block(stdlib::CaptureBlock)
        .block(stdlib::CaseBlock)
        .filter(stdlib::Abs)
        .filter(stdlib::Append)
        .filter(stdlib::AtLeast)
        .filter(stdlib::AtMost)
        .filter(stdlib::Capitalize)
        .filter(stdlib::Ceil)
        .filter(stdlib::Compact)
        .filter(stdlib::Concat)
        .filter(stdlib::Default)
        .filter(stdlib::DividedBy)
        .filter(stdlib::Downcase)
        .filter(stdlib::Escape)
        .filter(stdlib::EscapeOnce)
        .filter(stdlib::First)
        .filter(stdlib::Floor)
        .filter(stdlib::Join)
        .filter(stdlib::Last)
        .filter(stdlib::Lstrip)
        .filter(stdlib::Map)
        .filter(stdlib::Minus)
        .filter(stdlib::Modulo)
        .filter(stdlib::NewlineToBr)
        .filter(stdlib::Plus)
        .filter(stdlib::Prepend)
        .filter(stdlib::Remove)
        .filter(stdlib::RemoveFirst)
        .filter(stdlib::Replace)
        .filter(stdlib::ReplaceFirst)
        .filter(stdlib::Reverse)
        .filter(stdlib::Round)
        .filter(stdlib::Rstrip)
        .filter(stdlib::Size)
        .filter(stdlib::Slice)
        .filter(stdlib::Sort)
        .filter(stdlib::SortNatural)
        .filter(stdlib::Split)
        .filter(stdlib::Strip)
        .filter(stdlib::StripNewlines)
        .filter(stdlib::Times)
        .filter(stdlib::Truncate)
        .filter(stdlib::TruncateWords)
        .filter(stdlib::Uniq)
        .filter(stdlib::Upcase)
        .filter(stdlib::UrlDecode)
        .filter(stdlib::UrlEncode)
        .filter(stdlib::Where)
        .filter(Money)
        .build()
}

/// The process's parser, built once.
fn parser_once() -> Result<&'static liquid::Parser, RenderError> {
    static PARSER: OnceLock<Result<liquid::Parser, String>> = OnceLock::new();
    PARSER
        .get_or_init(|| parser().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| RenderError::Invalid {
            template: String::new(),
            part: "parser",
            line: None,
            message: message.clone(),
        })
}

fn compile_all() -> Cache {
    SOURCES
        .iter()
        .map(|s| {
            let compiled = parser_once()
                .and_then(|parser| compile(parser, s))
                .map(|compiled| CompiledTemplate {
                    id: s.id.to_string(),
                    version: 1,
                    compiled,
                })
                .map_err(|e| match e {
                    RenderError::Invalid {
                        part: "parser",
                        line,
                        message,
                        ..
                    } => RenderError::Invalid {
                        template: s.id.to_string(),
                        part: "parser",
                        line,
                        message,
                    },
                    other => other,
                });
            (s.id, compiled)
        })
        .collect()
}

fn compile(parser: &liquid::Parser, src: &Source) -> Result<Compiled, RenderError> {
    compile_parts(parser, src.id, &src.parts, Naming::Files)
}

fn compile_parts(
    parser: &liquid::Parser,
    template_id: &str,
    parts: &Parts<'_>,
    naming: Naming,
) -> Result<Compiled, RenderError> {
    let parse = |name: &'static str, text: &str| {
        parser
            .parse(text)
            .map(|template| Part {
                name,
                source: text.to_string(),
                template,
            })
            .map_err(|e| {
                let message = e.to_string();
                RenderError::Invalid {
                    template: template_id.to_string(),
                    part: name,
                    line: liquid_line(&message, text),
                    message,
                }
            })
    };
    Ok(match *parts {
        Parts::Email { subject, mjml, text } => Compiled::Email {
            subject: parse(naming.subject(), subject)?,
            mjml: parse(naming.mjml(), mjml)?,
            text: parse(naming.text("text.liquid"), text)?,
        },
        Parts::Sms { text } => Compiled::Sms {
            text: parse(naming.text("sms.liquid"), text)?,
        },
        Parts::Push { title, body } => Compiled::Push {
            title: parse(naming.title(), title)?,
            body: parse(naming.text("body.liquid"), body)?,
        },
    })
}

/// The line (1-based) of `source` a Liquid error is about: the position
/// its parser reports (` --> 3:7`), else the first line holding what it
/// names (the filter or tag it does not know, the expression it failed
/// in), else none.
fn liquid_line(message: &str, source: &str) -> Option<usize> {
    if let Some(line) = message.split("--> ").nth(1).and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<usize>().ok()
    }) {
        return Some(line);
    }
    let context = |key: &str| {
        message.lines().find_map(|line| {
            line.trim_start()
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| v.trim().to_string())
        })
    };
    // A filter that failed names itself with its arguments (`money : "EUR"`).
    let failed_filter = || context("filter").and_then(|f| f.split_whitespace().next().map(str::to_string));
    ["requested filter", "requested tag", "requested block"]
        .iter()
        .find_map(|key| context(key))
        .or_else(failed_filter)
        .and_then(|name| line_of(source, &name))
        .or_else(|| {
            message.lines().find_map(|line| {
                line.trim_start()
                    .strip_prefix("from: ")
                    .and_then(|snippet| line_of(source, snippet.trim()))
            })
        })
}

/// The first line (1-based) of `source` containing `needle`.
fn line_of(source: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    source.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// The line (1-based) of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

// ---------------------------------------------------------------------------
// Rendering.

fn to_globals(template_id: &str, vars: &Value) -> Result<liquid::Object, RenderError> {
    liquid::model::to_object(vars).map_err(|_| RenderError::InvalidVariables {
        template: template_id.to_string(),
    })
}

fn run(template_id: &str, part: &Part, globals: &liquid::Object) -> Result<String, RenderError> {
    part.template
        .render(globals)
        .map_err(|e| from_liquid(template_id, part, &e))
}

/// Maps a Liquid render error; a missing variable becomes
/// [`RenderError::MissingVariable`] with its dotted path. The `liquid` crate
/// keeps the details in the error's context, visible only in its text:
/// `Unknown variable` with `requested variable=<root>`, or `Unknown index`
/// with `variable=<path>` and `requested index=<key>`.
fn from_liquid(template_id: &str, part: &Part, e: &liquid::Error) -> RenderError {
    let text = e.to_string();
    let context = |key: &str| {
        text.lines().find_map(|line| {
            line.trim_start()
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
    };
    let headline = text.lines().next().unwrap_or_default();
    let variable = if headline.ends_with("Unknown variable") {
        context("requested variable")
    } else if headline.ends_with("Unknown index") {
        match (context("variable"), context("requested index")) {
            (Some(parent), Some(index)) => Some(format!("{parent}.{index}")),
            _ => None,
        }
    } else {
        None
    };
    match variable {
        Some(variable) => RenderError::MissingVariable {
            template: template_id.to_string(),
            line: variable_line(&part.source, &variable),
            variable,
            part: part.name,
        },
        None => RenderError::Invalid {
            template: template_id.to_string(),
            part: part.name,
            line: liquid_line(&text, &part.source),
            message: text.trim_end().to_string(),
        },
    }
}

/// The first line of `source` that reads `variable` (its dotted path, else
/// its last key).
fn variable_line(source: &str, variable: &str) -> Option<usize> {
    line_of(source, variable).or_else(|| variable.rsplit('.').next().and_then(|key| line_of(source, key)))
}

/// The line of the MJML part an MJML error is about. mrml reports a byte
/// position in the MJML as rendered with the variables: the line holding
/// it, or the same text's line in the part's source when the line is there
/// as written (Liquid moved it otherwise); an unexpected end is the last
/// line.
fn mjml_line(part: &Part, rendered: &str, error: &mrml::prelude::parser::Error) -> Option<usize> {
    use mrml::prelude::parser::Error as E;
    let rendered_line = match error {
        E::UnexpectedElement { position, .. }
        | E::UnexpectedToken { position, .. }
        | E::MissingAttribute { position, .. }
        | E::InvalidAttribute { position, .. }
        | E::InvalidFormat { position, .. }
        | E::IncludeLoaderError { position, .. } => line_at(rendered, position.start),
        E::ParserError { source, .. } => usize::try_from(source.pos().row).ok()?,
        E::EndOfStream { .. } => rendered.trim_end().lines().count().max(1),
        E::SizeLimit { .. } | E::NoRootNode => return None,
    };
    let text = rendered.lines().nth(rendered_line.saturating_sub(1)).map(str::trim);
    let written = text.filter(|t| !t.is_empty()).and_then(|t| {
        let mut same = part.source.lines().enumerate().filter(|(_, l)| l.trim() == t);
        match (same.next(), same.next()) {
            (Some((i, _)), None) => Some(i + 1),
            _ => None,
        }
    });
    Some(written.unwrap_or(rendered_line))
}

fn mjml_to_html(template_id: &str, part: &Part, source: &str) -> Result<String, RenderError> {
    let invalid = |line: Option<usize>, message: String| RenderError::Invalid {
        template: template_id.to_string(),
        part: part.name,
        line,
        message,
    };
    let parsed = mrml::parse(source).map_err(|e| invalid(mjml_line(part, source, &e), e.to_string()))?;
    let options = mrml::prelude::render::RenderOptions {
        disable_comments: true,
        social_icon_origin: None,
        // No web fonts: the templates use system font stacks.
        fonts: HashMap::new(),
    };
    parsed
        .element
        .render(&options)
        .map_err(|e| invalid(None, e.to_string()))
}

/// A copy of `vars` with every string HTML-escaped (keys stay as they are).
fn html_escape_leaves(vars: &Value) -> Value {
    match vars {
        Value::String(s) => Value::String(html_escape(s)),
        Value::Array(items) => Value::Array(items.iter().map(html_escape_leaves).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), html_escape_leaves(v))).collect()),
        other => other.clone(),
    }
}

/// Subjects and titles are one line, without surrounding blanks.
fn single_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text parts: trailing blanks off every line, at most one empty line in a
/// row (Liquid tags leave blank lines behind), one final newline.
fn tidy_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------
// The `money` filter.

#[derive(Debug, FilterParameters)]
struct MoneyArgs {
    #[parameter(description = "The ISO 4217 currency code, e.g. EUR.", arg_type = "str")]
    currency: Expression,
}

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "money",
    description = "Formats an amount in minor units (cents) in a currency.",
    parameters(MoneyArgs),
    parsed(MoneyFilter)
)]
struct Money;

#[derive(Debug, FromFilterParameters, Display_filter)]
#[name = "money"]
struct MoneyFilter {
    #[parameters]
    args: MoneyArgs,
}

impl Filter for MoneyFilter {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> liquid_core::Result<LiquidValue> {
        let args = self.args.evaluate(runtime)?;
        let minor = input
            .as_scalar()
            .and_then(|s| s.to_integer())
            .ok_or_else(|| liquid_core::Error::with_msg("money: the amount must be an integer in minor units"))?;
        Ok(LiquidValue::scalar(format_money(minor, args.currency.as_str())))
    }
}

/// `5990` in `EUR` → `€59.90`; unknown currencies get their code after the
/// amount (`59.90 CHF`).
pub fn format_money(minor: i64, currency: &str) -> String {
    let currency = currency.trim().to_ascii_uppercase();
    let decimals = match currency.as_str() {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" => 0,
        _ => 2,
    };
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let amount = if decimals == 0 {
        abs.to_string()
    } else {
        format!("{}.{:02}", abs / 100, abs % 100)
    };
    let symbol = match currency.as_str() {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        _ => None,
    };
    match symbol {
        Some(symbol) => format!("{sign}{symbol}{amount}"),
        None => format!("{sign}{amount} {currency}"),
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

/// Sorted ids of the embedded sources, for the registry test.
#[cfg(test)]
fn source_ids() -> Vec<&'static str> {
    SOURCES.iter().map(|s| s.id).collect()
}
