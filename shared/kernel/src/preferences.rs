//! Communication preferences: how often, about what, and when not to disturb.

use serde::{Deserialize, Serialize};

/// How often promotional marketing email may be sent (decision 0064):
/// `daily` at least 24 h after the last one, `weekly` (the default, for a
/// customer who never chose) at least 168 h after it, `never` no marketing
/// email at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EmailFrequency {
    Daily,
    #[default]
    Weekly,
    Never,
}

/// A daily window, in the customer's time zone, when nothing non-urgent is sent.
/// `start` and `end` are `HH:MM`; a window may cross midnight (22:00 to 08:00).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
}

/// A customer's preferences as a whole (`PUT` replaces them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    #[serde(default)]
    pub email_frequency: EmailFrequency,
    /// Marketing categories the customer wants; empty means all.
    #[serde(default)]
    pub categories: Vec<String>,
    /// IANA time zone name, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    #[serde(default)]
    pub sms_for_promotions: bool,
    /// Push topics the customer chose; opt-in (seed 000): empty means no
    /// marketing push, and so does a stored document without the field
    /// (decision 0064).
    #[serde(default)]
    pub push_categories: Vec<String>,
    /// The channel the customer would rather be reached on (seed 001's
    /// `preferredChannel`): a `channel: preferred` send tries it first
    /// (decision 0076). None: the step's fallback order alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_channel: Option<crate::vocabulary::Channel>,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            email_frequency: EmailFrequency::default(),
            categories: Vec::new(),
            timezone: default_timezone(),
            quiet_hours: None,
            sms_for_promotions: false,
            push_categories: Vec::new(),
            preferred_channel: None,
        }
    }
}

/// A preference value that is not acceptable, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPreference {
    pub field: String,
    pub message: String,
}

/// Is `name` an IANA time zone?
pub fn is_valid_timezone(name: &str) -> bool {
    crate::vocabulary::Zone::named(name).is_some()
}

fn is_valid_hh_mm(s: &str) -> bool {
    chrono::NaiveTime::parse_from_str(s, "%H:%M").is_ok() && s.len() == 5
}

fn check_categories(field: &str, list: &[String]) -> Result<(), InvalidPreference> {
    if list.len() > 50 {
        return Err(InvalidPreference {
            field: field.to_string(),
            message: "at most 50 categories".into(),
        });
    }
    for (i, c) in list.iter().enumerate() {
        let ok =
            !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !ok {
            return Err(InvalidPreference {
                field: format!("{field}[{i}]"),
                message: "a category is 1 to 64 letters, digits, '-' or '_'".into(),
            });
        }
    }
    Ok(())
}

impl Preferences {
    /// Checks every field; the first problem found is reported with its path.
    pub fn validate(&self) -> Result<(), InvalidPreference> {
        if !is_valid_timezone(&self.timezone) {
            return Err(InvalidPreference {
                field: "timezone".into(),
                message: format!("'{}' is not an IANA time zone", self.timezone),
            });
        }
        if let Some(q) = &self.quiet_hours {
            for (field, value) in [("quiet_hours.start", &q.start), ("quiet_hours.end", &q.end)] {
                if !is_valid_hh_mm(value) {
                    return Err(InvalidPreference {
                        field: field.into(),
                        message: format!("'{value}' is not a time of day as HH:MM"),
                    });
                }
            }
            if q.start == q.end {
                return Err(InvalidPreference {
                    field: "quiet_hours.end".into(),
                    message: "quiet hours must not start and end at the same time".into(),
                });
            }
        }
        check_categories("categories", &self.categories)?;
        check_categories("push_categories", &self.push_categories)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_timezone_and_bad_quiet_hours() {
        let mut p = Preferences::default();
        assert!(p.validate().is_ok());
        p.timezone = "Mars/Olympus".into();
        assert_eq!(p.validate().unwrap_err().field, "timezone");
        p.timezone = "Europe/Berlin".into();
        p.quiet_hours = Some(QuietHours {
            start: "22:00".into(),
            end: "25:00".into(),
        });
        assert_eq!(p.validate().unwrap_err().field, "quiet_hours.end");
        p.quiet_hours = Some(QuietHours {
            start: "22:00".into(),
            end: "08:00".into(),
        });
        assert!(p.validate().is_ok());
        p.categories = vec!["ok".into(), "not ok".into()];
        assert_eq!(p.validate().unwrap_err().field, "categories[1]");
    }
}
