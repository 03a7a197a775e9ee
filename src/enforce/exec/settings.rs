//! `[enforce.exec]`: the commands, as argv templates checked when the configuration is read.

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::vocab::time::Duration;

/// `[enforce.exec]`: argv templates, never a shell.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecSettings {
    /// The command run for each ban.
    pub ban: ArgvTemplate,
    /// The command run for each unban, if any.
    pub unban: Option<ArgvTemplate>,
    /// How long a command may run before it is killed.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// How many more times a failed command is tried.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_timeout() -> Duration {
    Duration(jiff::SignedDuration::from_secs(10))
}

fn default_retries() -> u32 {
    3
}

/// The placeholders an argv template may use.
pub const PLACEHOLDERS: &[&str] = &["ip", "jail", "until", "failures", "ports"];

/// A command as a list of arguments with `{ip}`, `{jail}`, `{until}`, `{failures}`, `{ports}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgvTemplate(pub Vec<String>);

impl<'de> Deserialize<'de> for ArgvTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let argv = Vec::<String>::deserialize(d)?;
        let Some(program) = argv.first() else {
            return Err(de::Error::custom(
                "the command is empty; hint: [\"/usr/local/bin/notify-ban\", \"{ip}\"]",
            ));
        };
        if !program.starts_with('/') {
            return Err(de::Error::custom(format!(
                "the program {program:?} must be an absolute path (moat does not search PATH \
                 as root)"
            )));
        }
        if let Some(why) = super::shell::runs_a_command_line(&argv) {
            return Err(de::Error::custom(format!(
                "{why}: moat puts no shell between a log line and a command; hint: name the \
                 program and its arguments directly, or put the commands in a script and name \
                 the script"
            )));
        }
        for arg in &argv {
            for name in placeholders(arg) {
                if !PLACEHOLDERS.contains(&name) {
                    return Err(de::Error::custom(format!(
                        "unknown placeholder {{{name}}} in {arg:?}; hint: use {}",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        Ok(ArgvTemplate(argv))
    }
}

/// The `{name}` placeholders in one argument.
pub fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    arg.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found() {
        let names: Vec<_> = placeholders("--ip={ip}/{jail}x{").collect();
        assert_eq!(names, ["ip", "jail"]);
    }
}
