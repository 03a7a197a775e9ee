//! Recognising an `exec` argv template that would hand a command line to a shell.
//!
//! moat's rule is that no shell stands between a log line and a command: the template is
//! split into arguments when the configuration is read and each placeholder becomes one
//! argument. A template that names a shell with `-c` undoes that, and so does one that reaches
//! the shell through a program that runs another (`env sh -c`, `sudo -u x bash -c`, `busybox
//! sh -c`, `timeout 5 dash -c`), folds `c` into other flags (`sh -ec`), or takes a command
//! line itself (`su -c`, `flock -c`, `env -S "sh -c ..."`, `watch`, an interpreter's `-e`).
//!
//! Rather than list every wrapper, every argument is looked at: wherever a shell or such a
//! program appears in the argv, what follows it must not give it a command line. A program
//! that is not one of these but is a copy of one under another name cannot be recognised;
//! the template is the administrator's, and this check is for mistakes and habits, not for
//! an adversary who writes the configuration.

/// Shells: anything after them that starts with `-` and holds a `c` (`-c`, `-ec`, `-xc`,
/// `--command`) makes them run a command line.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "lksh", "oksh", "pdksh", "ash", "hush",
    "yash", "posh", "rbash", "fish", "csh", "tcsh", "elvish", "nu", "xonsh",
];

/// Programs that run a command line given with a `-c` style option (through a shell).
const COMMAND_OPTION: &[&str] = &["su", "runuser", "flock", "script"];

/// Interpreters with the option letters that run program text from the argument.
const INTERPRETERS: &[(&str, &str)] = &[
    ("python", "c"),
    ("perl", "eE"),
    ("ruby", "e"),
    ("node", "ep"),
    ("nodejs", "ep"),
    ("php", "rB"),
    ("lua", "e"),
    ("luajit", "e"),
    ("expect", "c"),
    ("Rscript", "e"),
];

/// Programs whose argument is always a program or a command line.
const ALWAYS: &[(&str, &str)] = &[
    ("awk", "awk runs a program text, and its system() a shell"),
    ("gawk", "awk runs a program text, and its system() a shell"),
    ("mawk", "awk runs a program text, and its system() a shell"),
    ("nawk", "awk runs a program text, and its system() a shell"),
    ("watch", "watch runs its command through sh -c"),
    ("eval", "eval runs a command line"),
    ("sg", "sg runs its command through /bin/sh"),
];

fn name_of(arg: &str) -> &str {
    arg.rsplit('/').next().unwrap_or(arg)
}

/// `python3.11` is `python`, `perl5.36` is `perl`, `lua5.4` is `lua`.
fn base_name(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
}

/// An option (`-x`, `--long`) holding one of `letters`, or a long option starting `--long`.
fn gives(arg: &str, letters: &str, long: &[&str]) -> bool {
    if let Some(l) = arg.strip_prefix("--") {
        return long
            .iter()
            .any(|w| l == *w || l.starts_with(&format!("{w}=")));
    }
    arg.strip_prefix('-')
        .is_some_and(|flags| flags.chars().any(|c| letters.contains(c)))
}

/// Why `argv` would put a command line through a shell or an interpreter, if it would.
pub fn runs_a_command_line(argv: &[String]) -> Option<String> {
    for (i, arg) in argv.iter().enumerate() {
        let name = name_of(arg);
        let rest = &argv[i + 1..];
        let given = |letters: &str, long: &[&str]| rest.iter().find(|a| gives(a, letters, long));
        if SHELLS.contains(&name) {
            // Any option with a `c` in it, long ones included (`--command` for fish).
            if let Some(opt) = rest.iter().find(|a| a.starts_with('-') && a.contains('c')) {
                return Some(format!(
                    "the shell {name:?} is given {opt:?}, so it would run a command line"
                ));
            }
        } else if COMMAND_OPTION.contains(&name) {
            if let Some(opt) = given("c", &["command", "session-command"]) {
                return Some(format!(
                    "{name:?} with {opt:?} runs a command line through a shell"
                ));
            }
        } else if name == "env" {
            // `env -S "sh -c ..."` splits one argument into several.
            if let Some(opt) = given("S", &["split-string"]) {
                return Some(format!(
                    "env {opt:?} splits a string into a command, as a shell would"
                ));
            }
        } else if name == "capsh" {
            // `capsh -- ARGS` runs /bin/bash ARGS.
            if rest.iter().any(|a| a == "--" || a.starts_with("--shell")) {
                return Some("capsh -- runs a shell".into());
            }
        } else if name == "sudo" || name == "doas" {
            // `sudo -s CMD` and `sudo -i CMD` run CMD through the target user's shell; its
            // options end where the program is named.
            if let Some(opt) = rest
                .iter()
                .take_while(|a| !a.starts_with('/'))
                .find(|a| gives(a, "si", &["shell", "login"]))
            {
                return Some(format!("{name} {opt:?} runs a command through a shell"));
            }
        } else if let Some((_, reason)) = ALWAYS.iter().find(|(n, _)| *n == name) {
            return Some((*reason).into());
        } else if let Some((interp, letters)) =
            INTERPRETERS.iter().find(|(n, _)| *n == base_name(name))
        {
            if let Some(opt) = given(letters, &["eval", "print", "command"]) {
                return Some(format!("{interp} with {opt:?} runs program text"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(argv: &[&str]) -> Option<String> {
        runs_a_command_line(&argv.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn shells_with_a_command_line_are_found_behind_any_wrapper() {
        for argv in [
            &["/bin/sh", "-c", "x {ip}"][..],
            &["/bin/sh", "-ec", "x {ip}"],
            &["/bin/bash", "-x", "-c", "x"],
            &["/bin/bash", "-xc", "x"],
            &["/bin/dash", "-cx", "x"],
            &["/usr/bin/fish", "--command", "x"],
            &["/usr/bin/env", "sh", "-c", "x"],
            &["/usr/bin/env", "-i", "PATH=/bin", "/bin/zsh", "-c", "x"],
            &["/bin/busybox", "sh", "-c", "x"],
            &["/bin/busybox", "ash", "-c", "x"],
            &["/usr/bin/nice", "-n", "5", "ksh", "-c", "x"],
            &["/usr/bin/timeout", "5", "/bin/sh", "-c", "x"],
            &["/usr/bin/sudo", "-u", "nobody", "bash", "-c", "x"],
            &["/usr/bin/sudo", "-s", "x"],
            &["/usr/bin/sudo", "-u", "nobody", "-i", "x"],
            &["/usr/bin/sg", "adm", "x"],
            &["/usr/bin/ionice", "-c", "3", "sh", "-c", "x"],
            &["/usr/bin/su", "nobody", "-c", "x"],
            &["/usr/bin/flock", "/run/lock", "-c", "x"],
            &["/usr/bin/env", "-S", "sh -c x"],
            &["/usr/bin/env", "--split-string=sh -c x"],
            &["/sbin/capsh", "--", "-c", "x"],
            &["/usr/bin/python3", "-c", "import os"],
            &["/usr/bin/python3.11", "-Bc", "import os"],
            &["/usr/bin/perl", "-le", "print 1"],
            &["/usr/bin/awk", "BEGIN { system(\"x\") }"],
            &["/usr/bin/watch", "-n1", "x"],
            &["/usr/sbin/ip", "netns", "exec", "w", "sh", "-c", "x"],
        ] {
            assert!(check(argv).is_some(), "{argv:?}");
        }
    }

    #[test]
    fn programs_and_scripts_pass() {
        for argv in [
            &["/usr/local/bin/notify-ban", "{ip}", "{jail}", "-c", "x"][..],
            &["/usr/sbin/ipset", "add", "blocklist", "{ip}", "-exist"],
            &["/usr/bin/touch", "/run/bans/{ip}"],
            &["/bin/sh", "/usr/local/lib/ban.sh", "{ip}"],
            &["/usr/bin/env", "-i", "/usr/local/bin/notify", "{ip}"],
            &[
                "/usr/bin/sudo",
                "-u",
                "nobody",
                "/usr/local/bin/notify",
                "-i",
                "{ip}",
            ],
            &["/usr/bin/python3", "/usr/local/lib/ban.py", "{ip}"],
            &[
                "/usr/bin/curl",
                "--connect-timeout",
                "5",
                "https://example.org/{ip}",
            ],
        ] {
            assert_eq!(check(argv), None, "{argv:?}");
        }
    }
}
