//! Reading an nginx configuration for what `moat init` needs: where each site logs and in
//! what format, where it proxies to, whether it restores visitors' addresses from
//! Cloudflare's header, and whether it uses basic auth or `limit_req`.
//!
//! nginx's syntax is simple enough to read without nginx: directives end with `;`, blocks are
//! in braces, `#` starts a comment, values may be quoted. [`parse`] turns one file's text into
//! directives; [`read`] follows `include` (globs, relative to the main file's directory, as
//! nginx does) and collects what matters into [`Nginx`]. Reading never runs nginx (`nginx -T`
//! would need its binary, root, and a valid configuration).

use std::path::{Path, PathBuf};

/// One directive with its arguments and, for a block, what it contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// The directive's name (`access_log`, `server`).
    pub name: String,
    /// Its arguments, unquoted.
    pub args: Vec<String>,
    /// A block's directives; `None` for a directive ended by `;`.
    pub block: Option<Vec<Directive>>,
}

/// Splits configuration text into directives; text after an unbalanced brace is dropped
/// rather than guessed at.
pub fn parse(text: &str) -> Vec<Directive> {
    let tokens = tokenize(text);
    let mut pos = 0;
    parse_block(&tokens, &mut pos)
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' => {
                chars.next();
                out.push(Token::Semicolon);
            }
            '{' => {
                chars.next();
                out.push(Token::Open);
            }
            '}' => {
                chars.next();
                out.push(Token::Close);
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '"' | '\'' => {
                let quote = c;
                chars.next();
                let mut word = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        c if c == quote => break,
                        c => word.push(c),
                    }
                }
                out.push(Token::Word(word));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                        break;
                    }
                    // `${var}` in a value: the brace is part of the word.
                    if c == '$' {
                        word.push(c);
                        chars.next();
                        if chars.peek() == Some(&'{') {
                            for c in chars.by_ref() {
                                word.push(c);
                                if c == '}' {
                                    break;
                                }
                            }
                        }
                        continue;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    out
}

fn parse_block(tokens: &[Token], pos: &mut usize) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    while *pos < tokens.len() {
        let t = &tokens[*pos];
        *pos += 1;
        match t {
            Token::Word(w) => words.push(w.clone()),
            Token::Semicolon => {
                if !words.is_empty() {
                    let name = words.remove(0);
                    out.push(Directive {
                        name,
                        args: std::mem::take(&mut words),
                        block: None,
                    });
                }
            }
            Token::Open => {
                let inner = parse_block(tokens, pos);
                if !words.is_empty() {
                    let name = words.remove(0);
                    out.push(Directive {
                        name,
                        args: std::mem::take(&mut words),
                        block: Some(inner),
                    });
                }
            }
            Token::Close => return out,
        }
    }
    out
}

/// The format an access log is written in, as far as moat's filters care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// nginx's `combined` (or a format starting like it): the `portainer`, `nginx-botsearch`
    /// and `wordpress` filters read it.
    Combined,
    /// JSON lines (`escape=json`, or a format that starts with `{`).
    Json,
    /// A format of its own, which the built-in filters do not read.
    Other,
}

/// An access log one part of the configuration writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLog {
    /// As written in the configuration.
    pub path: String,
    /// The format it is written in, from its `log_format`.
    pub format: LogFormat,
    /// The `server_name`s of the server that writes it (empty: set at `http` level).
    pub server_names: Vec<String>,
    /// Where its server proxies to (`proxy_pass` addresses), at `http` level every server's.
    pub proxies: Vec<String>,
}

/// What `moat init` takes from an nginx configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nginx {
    /// The files read, main file first.
    pub files: Vec<PathBuf>,
    /// The access logs written to files (neither `off` nor `syslog:`).
    pub access_logs: Vec<AccessLog>,
    /// The error logs' paths, as written.
    pub error_logs: Vec<String>,
    /// `real_ip_header` values.
    pub real_ip_headers: Vec<String>,
    /// `set_real_ip_from` values.
    pub real_ip_from: Vec<String>,
    /// Some part uses basic auth (`auth_basic` other than `off`): its failures can be watched.
    pub basic_auth: bool,
    /// Some part uses `limit_req`: its rejections can be watched.
    pub limit_req: bool,
}

/// nginx's `combined`, the default of `access_log` without a format.
const COMBINED_START: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status";

/// Reads the configuration at `main` and everything it includes. `map` turns a path written
/// in the configuration into the path to open (`moat init --root`).
pub fn read(main: &Path, map: &dyn Fn(&str) -> PathBuf) -> Option<Nginx> {
    let text = std::fs::read_to_string(main).ok()?;
    let base = main.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut files = vec![main.to_path_buf()];
    let tree = expand(parse(&text), &base, map, &mut files, 0);
    let mut formats: Vec<(String, LogFormat)> = Vec::new();
    collect_formats(&tree, &mut formats);
    let mut out = Nginx {
        files,
        ..Default::default()
    };
    walk(&tree, &formats, &mut out, None);
    Some(out)
}

/// Replaces `include` directives by the directives of the files they name.
fn expand(
    tree: Vec<Directive>,
    base: &Path,
    map: &dyn Fn(&str) -> PathBuf,
    files: &mut Vec<PathBuf>,
    depth: usize,
) -> Vec<Directive> {
    let mut out = Vec::new();
    for d in tree {
        if d.name == "include" && d.block.is_none() && depth < 8 {
            for pattern in &d.args {
                let written = if Path::new(pattern).is_absolute() {
                    pattern.clone()
                } else {
                    base.join(pattern).display().to_string()
                };
                let mapped = map(&written).display().to_string();
                let mut paths: Vec<PathBuf> = glob::glob(&mapped)
                    .map(|g| g.filter_map(Result::ok).collect())
                    .unwrap_or_default();
                paths.sort();
                for p in paths {
                    // mime.types and the like are included too; only their directives
                    // (none that matter here) come along.
                    if let Ok(text) = std::fs::read_to_string(&p) {
                        files.push(p);
                        out.extend(expand(parse(&text), base, map, files, depth + 1));
                    }
                }
            }
            continue;
        }
        let block = d.block.map(|b| expand(b, base, map, files, depth));
        out.push(Directive { block, ..d });
    }
    out
}

fn collect_formats(tree: &[Directive], out: &mut Vec<(String, LogFormat)>) {
    for d in tree {
        if d.name == "log_format" && !d.args.is_empty() {
            let name = d.args[0].clone();
            let rest: Vec<&String> = d.args[1..].iter().collect();
            let json = rest.first().is_some_and(|a| a.starts_with("escape=json"))
                || rest
                    .iter()
                    .find(|a| !a.starts_with("escape="))
                    .is_some_and(|a| a.trim_start().starts_with('{'));
            let body: String = rest
                .iter()
                .filter(|a| !a.starts_with("escape="))
                .map(|a| a.as_str())
                .collect();
            let format = if json {
                LogFormat::Json
            } else if body.starts_with(COMBINED_START) {
                LogFormat::Combined
            } else {
                LogFormat::Other
            };
            out.push((name, format));
        }
        if let Some(b) = &d.block {
            collect_formats(b, out);
        }
    }
}

/// Collects the directives that matter; `server` is the enclosing server block's names and
/// proxies when inside one.
fn walk(
    tree: &[Directive],
    formats: &[(String, LogFormat)],
    out: &mut Nginx,
    server: Option<(&[String], &[String])>,
) {
    for d in tree {
        match d.name.as_str() {
            "access_log" => {
                let Some(path) = d.args.first() else { continue };
                if path == "off" || path.starts_with("syslog:") {
                    continue;
                }
                let format = match d.args.get(1).map(String::as_str) {
                    None | Some("combined") => LogFormat::Combined,
                    Some(f) if f.contains('=') => LogFormat::Combined,
                    Some(name) => formats
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or(LogFormat::Other, |(_, f)| *f),
                };
                let (server_names, proxies) = match server {
                    Some((names, proxies)) => (names.to_vec(), proxies.to_vec()),
                    None => (Vec::new(), Vec::new()),
                };
                if !out.access_logs.iter().any(|l| &l.path == path) {
                    out.access_logs.push(AccessLog {
                        path: path.clone(),
                        format,
                        server_names,
                        proxies,
                    });
                }
            }
            "error_log" => {
                if let Some(path) = d.args.first() {
                    if !path.starts_with("syslog:")
                        && path != "stderr"
                        && !out.error_logs.contains(path)
                    {
                        out.error_logs.push(path.clone());
                    }
                }
            }
            "real_ip_header" => out.real_ip_headers.extend(d.args.iter().cloned()),
            "set_real_ip_from" => out.real_ip_from.extend(d.args.iter().cloned()),
            "auth_basic" if d.args.first().is_some_and(|a| a != "off") => {
                out.basic_auth = true;
            }
            "limit_req" => out.limit_req = true,
            _ => {}
        }
        if let Some(block) = &d.block {
            if d.name == "server" {
                let names: Vec<String> = block
                    .iter()
                    .filter(|x| x.name == "server_name")
                    .flat_map(|x| x.args.iter().cloned())
                    .collect();
                let mut proxies = Vec::new();
                collect_proxies(block, &mut proxies);
                walk(block, formats, out, Some((&names, &proxies)));
                // A server without an access_log of its own writes the http-level one: its
                // proxies count there.
                if !block.iter().any(|x| x.name == "access_log") {
                    for l in out
                        .access_logs
                        .iter_mut()
                        .filter(|l| l.server_names.is_empty())
                    {
                        l.proxies.extend(proxies.iter().cloned());
                    }
                }
            } else {
                walk(block, formats, out, server);
            }
        }
    }
}

fn collect_proxies(tree: &[Directive], out: &mut Vec<String>) {
    for d in tree {
        if d.name == "proxy_pass" {
            out.extend(d.args.iter().cloned());
        }
        if d.name == "upstream" {
            // An upstream's name is what proxy_pass names; its servers are the addresses.
            if let Some(b) = &d.block {
                out.extend(
                    b.iter()
                        .filter(|x| x.name == "server")
                        .filter_map(|x| x.args.first().cloned()),
                );
            }
        }
        if let Some(b) = &d.block {
            collect_proxies(b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_blocks_quotes_and_comments() {
        let d = parse(
            "user www-data; # who\nhttp {\n  log_format main '$remote_addr \"$request\"';\n  \
             server { listen 80; location / { proxy_pass http://127.0.0.1:9000; } }\n}\n",
        );
        assert_eq!(d[0].name, "user");
        assert_eq!(d[0].args, vec!["www-data"]);
        let http = d[1].block.as_ref().unwrap();
        assert_eq!(http[0].args, vec!["main", "$remote_addr \"$request\""]);
        assert_eq!(http[1].name, "server");
    }

    #[test]
    fn logs_formats_proxies_and_includes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sites-enabled")).unwrap();
        std::fs::write(
            d.join("nginx.conf"),
            "http {\n  log_format json escape=json '{\"ip\":\"$remote_addr\"}';\n  \
             log_format main '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent';\n  \
             access_log /var/log/nginx/access.log;\n  real_ip_header CF-Connecting-IP;\n  \
             set_real_ip_from 173.245.48.0/20;\n  include sites-enabled/*;\n}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sites-enabled/portainer"),
            "server {\n  server_name portainer.example.com;\n  access_log /var/log/nginx/portainer.log main;\n  \
             location / { proxy_pass https://127.0.0.1:9443; }\n}\n\
             server {\n  server_name api.example.com;\n  access_log /var/log/nginx/api.log json;\n  auth_basic \"x\";\n}\n\
             server {\n  server_name other;\n  location / { proxy_pass http://backend:8080; }\n}\n",
        )
        .unwrap();
        let n = read(&d.join("nginx.conf"), &|p| PathBuf::from(p)).unwrap();
        assert_eq!(n.files.len(), 2);
        assert_eq!(n.access_logs.len(), 3, "{:?}", n.access_logs);
        let main = &n.access_logs[0];
        assert_eq!(main.path, "/var/log/nginx/access.log");
        assert_eq!(main.format, LogFormat::Combined);
        assert_eq!(
            main.proxies,
            vec!["http://backend:8080"],
            "servers without a log of their own"
        );
        let p = &n.access_logs[1];
        assert_eq!(
            (p.format, p.server_names.clone(), p.proxies.clone()),
            (
                LogFormat::Combined,
                vec!["portainer.example.com".to_string()],
                vec!["https://127.0.0.1:9443".to_string()]
            )
        );
        assert_eq!(n.access_logs[2].format, LogFormat::Json);
        assert_eq!(n.real_ip_headers, vec!["CF-Connecting-IP"]);
        assert_eq!(n.real_ip_from, vec!["173.245.48.0/20"]);
        assert!(n.basic_auth && !n.limit_req);
    }
}
