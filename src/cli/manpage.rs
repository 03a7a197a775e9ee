//! A Markdown document as a manual page: how moat.toml(5) is made from `docs/config.md`, so
//! the reference is written once.
//!
//! pulldown-cmark parses the Markdown; this turns its events into roff (through the `roff`
//! crate, which escapes). Only what the documentation uses is rendered with care: headings
//! (`##` become sections, `###` subsections; the first `#` is the page's title and replaced
//! by NAME), paragraphs, lists, code blocks (unfilled, indented), inline code and bold
//! (bold), emphasis (italic), links (their text, then the address when it is not another
//! Markdown file), and tables. A table becomes a list of tagged paragraphs: the first column
//! is the tag, the middle columns follow as "header: value" lines, the last column is the
//! paragraph; a man page cannot show a wide table in 80 columns, and `tbl` would wrap the
//! long explanations into unreadable cells.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use roff::{bold, italic, roman, Inline, Roff};

/// What the page is.
pub struct Page<'a> {
    /// The page's name, such as "moat.toml".
    pub name: &'a str,
    pub section: &'a str,
    /// The NAME line's description.
    pub summary: &'a str,
    /// The footer's source, such as "moat 0.1.0".
    pub source: &'a str,
    /// The header's manual, such as "File Formats".
    pub manual: &'a str,
}

/// Where inline text currently goes.
#[derive(Default)]
struct Table {
    head: Vec<Vec<Inline>>,
    rows: Vec<Vec<Vec<Inline>>>,
    in_head: bool,
}

/// Renders `markdown` as the manual page `page`.
pub fn render(markdown: &str, page: &Page) -> String {
    let mut doc = Roff::new();
    doc.control(
        "TH",
        [
            page.name.to_uppercase().as_str(),
            page.section,
            // No date (the page is made at build time, and builds should be reproducible);
            // written as "" since an empty argument would vanish and shift the others.
            "\"\"",
            page.source,
            page.manual,
        ],
    );
    doc.control("SH", ["NAME"]);
    doc.text([roman(format!("{} - {}", page.name, page.summary))]);

    let mut inlines: Vec<Inline> = Vec::new();
    // Nesting of bold and italic, for the inline text being collected.
    let (mut strong, mut emphasis) = (0usize, 0usize);
    let mut link: Option<String> = None;
    let mut code_block = false;
    let mut table: Option<Table> = None;
    let mut cell: Vec<Inline> = Vec::new();
    let mut row: Vec<Vec<Inline>> = Vec::new();
    let mut seen_title = false;
    let mut list_depth = 0usize;

    let push = |target: &mut Vec<Inline>, text: &str, strong: usize, emphasis: usize| {
        let piece = if strong > 0 {
            bold(text)
        } else if emphasis > 0 {
            italic(text)
        } else {
            roman(text)
        };
        target.push(piece);
    };

    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        let target: &mut Vec<Inline> = if table.is_some() {
            &mut cell
        } else {
            &mut inlines
        };
        match event {
            Event::Start(Tag::Heading { .. }) => {}
            Event::End(TagEnd::Heading(level)) => {
                let title = plain(&std::mem::take(&mut inlines));
                match level {
                    HeadingLevel::H1 if !seen_title => {
                        seen_title = true;
                        doc.control("SH", ["DESCRIPTION"]);
                    }
                    HeadingLevel::H1 | HeadingLevel::H2 => {
                        doc.control("SH", [title.to_uppercase().as_str()]);
                    }
                    _ => {
                        doc.control("SS", [title.as_str()]);
                    }
                }
            }
            Event::Start(Tag::Paragraph) => {}
            Event::End(TagEnd::Paragraph) => {
                let text = std::mem::take(&mut inlines);
                if list_depth == 0 {
                    doc.control("PP", []);
                }
                doc.text(text);
            }
            Event::Start(Tag::List(_)) => list_depth += 1,
            Event::End(TagEnd::List(_)) => {
                list_depth -= 1;
                if list_depth == 0 {
                    doc.control("PP", []);
                }
            }
            Event::Start(Tag::Item) => {
                doc.control("IP", ["\\(bu", "2"]);
            }
            Event::End(TagEnd::Item) => {
                // A tight list's item has its text outside a paragraph.
                let text = std::mem::take(&mut inlines);
                if !text.is_empty() {
                    doc.text(text);
                }
            }
            Event::Start(Tag::CodeBlock(_)) => {
                code_block = true;
                doc.control("PP", []);
                doc.control("RS", ["4"]);
                doc.control("nf", []);
            }
            Event::End(TagEnd::CodeBlock) => {
                code_block = false;
                doc.control("fi", []);
                doc.control("RE", []);
            }
            Event::Text(text) if code_block => {
                for line in text.lines() {
                    doc.text([roman(line)]);
                }
            }
            Event::Text(text) => push(target, &text, strong, emphasis),
            Event::Code(text) => target.push(bold(text.to_string())),
            Event::SoftBreak => target.push(roman(" ")),
            Event::HardBreak => target.push(Inline::LineBreak),
            Event::Start(Tag::Strong) => strong += 1,
            Event::End(TagEnd::Strong) => strong -= 1,
            Event::Start(Tag::Emphasis) => emphasis += 1,
            Event::End(TagEnd::Emphasis) => emphasis -= 1,
            Event::Start(Tag::Link { dest_url, .. }) => link = Some(dest_url.to_string()),
            Event::End(TagEnd::Link) => {
                if let Some(url) = link.take() {
                    let shown = plain(target);
                    // Another page of the documentation is named by its text; an address
                    // the reader may want is given, unless the text already is it.
                    let internal =
                        url.ends_with(".md") || url.contains(".md#") || url.starts_with('#');
                    if !internal && !shown.ends_with(url.as_str()) {
                        target.push(roman(format!(" <{url}>")));
                    }
                }
            }
            Event::Start(Tag::Table(_)) => table = Some(Table::default()),
            Event::Start(Tag::TableHead) => {
                if let Some(t) = table.as_mut() {
                    t.in_head = true;
                }
            }
            Event::End(TagEnd::TableHead) => {
                if let Some(t) = table.as_mut() {
                    t.head = std::mem::take(&mut row);
                    t.in_head = false;
                }
            }
            Event::Start(Tag::TableRow) | Event::Start(Tag::TableCell) => {}
            Event::End(TagEnd::TableCell) => row.push(std::mem::take(&mut cell)),
            Event::End(TagEnd::TableRow) => {
                if let Some(t) = table.as_mut() {
                    t.rows.push(std::mem::take(&mut row));
                }
            }
            Event::End(TagEnd::Table) => {
                if let Some(t) = table.take() {
                    render_table(&mut doc, t);
                }
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                // None in the documentation; shown as written rather than lost.
                push(target, &html, strong, emphasis);
            }
            _ => {}
        }
    }
    doc.render()
}

fn render_table(doc: &mut Roff, table: Table) {
    let headers: Vec<String> = table.head.iter().map(|h| plain(h)).collect();
    for row in table.rows {
        let mut cells = row.into_iter();
        let Some(tag) = cells.next() else { continue };
        let rest: Vec<Vec<Inline>> = cells.collect();
        doc.control("TP", []);
        // The tag in bold, whatever its own fonts were.
        doc.text([bold(plain(&tag))]);
        let last = rest.len().saturating_sub(1);
        for (i, c) in rest.into_iter().enumerate() {
            if i < last {
                let mut line = vec![italic(format!(
                    "{}: ",
                    headers.get(i + 1).map_or("", String::as_str)
                ))];
                line.extend(c);
                doc.text(line);
                doc.control("br", []);
            } else {
                doc.text(c);
            }
        }
    }
    doc.control("PP", []);
}

/// The text of some inlines, without fonts.
fn plain(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Roman(t) | Inline::Bold(t) | Inline::Italic(t) => t.as_str(),
            Inline::LineBreak => " ",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(md: &str) -> String {
        render(
            md,
            &Page {
                name: "moat.toml",
                section: "5",
                summary: "the configuration",
                source: "moat 0.1.0",
                manual: "File Formats",
            },
        )
    }

    #[test]
    fn headings_paragraphs_code_and_tables() {
        let out = page(
            "# Title\n\nIntro with `code` and **bold**, see [daemon.md](daemon.md) and \
             [the ranges](https://www.cloudflare.com/ips/).\n\n## Jail keys\n\n\
             | key | type | meaning |\n|---|---|---|\n| `maxretry` | integer | Failures that ban. |\n\n\
             ### Durations\n\n```toml\n[jails.x]\n.dot = 1\n```\n\n- one\n- two\n",
        );
        assert!(
            out.contains(".TH MOAT.TOML 5 \"\" \"moat 0.1.0\" \"File Formats\""),
            "{out}"
        );
        assert!(
            out.contains(".SH NAME\nmoat.toml \\- the configuration\n"),
            "{out}"
        );
        assert!(out.contains(".SH DESCRIPTION\n"), "{out}");
        assert!(out.contains("\\fBcode\\fR"), "{out}");
        assert!(
            out.contains("see daemon.md and the ranges <https://www.cloudflare.com/ips/>"),
            "{out}"
        );
        assert!(out.contains(".SH \"JAIL KEYS\"\n"), "{out}");
        assert!(
            out.contains(".TP\n\\fBmaxretry\\fR\n\\fItype: \\fRinteger\n.br\nFailures that ban.\n"),
            "{out}"
        );
        assert!(out.contains(".SS Durations\n"), "{out}");
        // Code is unfilled and a line starting with a dot cannot become a request.
        assert!(out.contains(".nf\n[jails.x]\n\\&.dot = 1\n.fi\n"), "{out}");
        assert!(out.contains(".IP \\(bu 2\none\n"), "{out}");
    }

    #[test]
    fn the_configuration_reference_renders_with_man() {
        // The real document, through the real man: no warnings from groff.
        let out = page(include_str!("../../docs/config.md"));
        assert!(out.contains(".SH \"JAIL KEYS\""));
        assert!(out.contains("\\fBfindtime\\fR"));
        let Ok(mut child) = std::process::Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-"])
            .env("MANWIDTH", "80")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            let why = "man is not installed (apt-get install man-db)";
            assert!(
                std::env::var_os("MOAT_TEST_STRICT").is_none_or(|v| v != "1"),
                "MOAT_TEST_STRICT=1 and {why}"
            );
            eprintln!("SKIP the man check: {why}");
            return;
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(out.as_bytes())
            .unwrap();
        let done = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(
            done.status.success() && stderr.trim().is_empty(),
            "{stderr}"
        );
        // Without a terminal, man marks bold by overstriking ("J\x08J"): drop the first half.
        let text = regex::Regex::new(".\x08")
            .unwrap()
            .replace_all(&String::from_utf8_lossy(&done.stdout), "")
            .into_owned();
        assert!(text.contains("JAIL KEYS"), "{text}");
    }
}
