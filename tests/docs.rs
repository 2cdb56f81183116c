//! The docs against the program they describe, so that they cannot drift:
//!
//! - every `echokit ...` command line in README.md and docs/*.md (in code
//!   blocks and inline code; after `cargo run --`, `just serve` and a
//!   runtime's `echokit.wasm` too) parses with the real command line: a
//!   flag, subcommand or value that no longer exists fails, naming the file
//!   and line;
//! - every relative link and `#anchor` resolves, every topic page is
//!   linked from the README, and the README stays at most 400 lines;
//! - the `console` blocks (a `$ echokit ...` line and its output, for
//!   commands that need no server, such as `--help`) run the built binary
//!   and must print what they show (trycmd; `TRYCMD=overwrite` rewrites
//!   them);
//! - the man pages (docs/man/) and completion scripts (docs/completions/)
//!   are what the current command line generates (`just man` rewrites
//!   them).
//!
//! The command line is the binary's own module, `src/cli/`, which no other
//! crate can reach. This test includes it by path, as clap's guide
//! includes a command's definition into a build script to generate man
//! pages: it parses with the very definition `echokit` is built from, not
//! a copy, and the library stays free of flags. The cost: the command
//! line compiles a second time, into this test, and its few unit tests
//! run here again.

#![cfg(not(target_os = "wasi"))]

#[allow(dead_code, unused_imports)]
#[path = "../src/cli/mod.rs"]
mod cli;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap_complete::{Generator, Shell};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The most lines the README may have: the rest belongs in docs/.
const README_MAX_LINES: usize = 400;

/// Set to `overwrite` (by `just man`), the generated files are written
/// instead of compared.
const OVERWRITE_VAR: &str = "ECHOKIT_DOCS";

/// The shells whose completion scripts are kept in docs/completions/.
const SHELLS: [Shell; 4] = [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell];

/// One Markdown file: its path from the repository root, and its text.
struct Page {
    path: PathBuf,
    text: String,
}

impl Page {
    /// The 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.text[..offset].matches('\n').count() + 1
    }

    /// Markdown events with their byte ranges (tables on, as GitHub has).
    fn events(&self) -> impl Iterator<Item = (Event<'_>, std::ops::Range<usize>)> {
        Parser::new_ext(&self.text, Options::ENABLE_TABLES).into_offset_iter()
    }
}

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md.
fn pages() -> Vec<Page> {
    let mut paths = vec![PathBuf::from("README.md")];
    let docs = fs::read_dir(root().join("docs")).expect("docs/ is readable");
    let mut topics: Vec<PathBuf> = docs
        .map(|entry| entry.expect("docs/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| Path::new("docs").join(path.file_name().expect("a file name")))
        .collect();
    topics.sort();
    paths.extend(topics);
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(root().join(&path))
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            Page { path, text }
        })
        .collect()
}

/// The lines of code in `page`, with their line numbers: each line of a
/// code block (a line ending in `\` joined with the next), and each
/// inline code span.
fn code_lines(page: &Page) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_block = false;
    for (event, range) in page.events() {
        match event {
            Event::Start(Tag::CodeBlock(_)) => in_block = true,
            Event::End(TagEnd::CodeBlock) => in_block = false,
            Event::Code(code) => lines.push((page.line(range.start), code.into_string())),
            Event::Text(text) if in_block => {
                let first = page.line(range.start);
                let mut pending: Option<(usize, String)> = None;
                for (i, line) in text.lines().enumerate() {
                    let (start, mut joined) = pending.take().unwrap_or((first + i, String::new()));
                    match line.trim_end().strip_suffix('\\') {
                        Some(head) => {
                            joined.push_str(head);
                            pending = Some((start, joined));
                        }
                        None => {
                            joined.push_str(line);
                            lines.push((start, joined));
                        }
                    }
                }
                lines.extend(pending);
            }
            _ => {}
        }
    }
    lines
}

/// Splits a shell line into words: quotes removed, the operators that end
/// a command (`| & ; < > ( )`) words of their own, a `#` word and what
/// follows dropped.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    let flush = |word: &mut String, quoted: &mut bool, words: &mut Vec<String>| {
        if !word.is_empty() || *quoted {
            words.push(std::mem::take(word));
        }
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                quoted = true;
                for inner in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                    word.push(inner);
                }
            }
            '#' if word.is_empty() && !quoted => break,
            c if c.is_whitespace() => flush(&mut word, &mut quoted, &mut words),
            '|' | '&' | ';' | '<' | '>' | '(' | ')' => {
                flush(&mut word, &mut quoted, &mut words);
                words.push(c.to_string());
            }
            c => word.push(c),
        }
    }
    flush(&mut word, &mut quoted, &mut words);
    words
}

/// Whether `word` ends a command in a shell line.
fn is_operator(word: &str) -> bool {
    matches!(word, "|" | "&" | ";" | "<" | ">" | "(" | ")")
}

/// The echokit argument lists in a shell line: after `echokit` (or a path
/// to it), after a component run by a runtime (`echokit.wasm`, jco's
/// `echokit.js`), after `cargo run ... --`, and `serve` with what follows
/// `just serve` or `just serve-wasm`.
fn echokit_args(line: &str) -> Vec<Vec<String>> {
    let words = shell_words(line);
    let until_operator = |from: usize| -> Vec<String> {
        words[from.min(words.len())..]
            .iter()
            .take_while(|word| !is_operator(word))
            .cloned()
            .collect()
    };
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1).map(String::as_str);
        let args = if word == "echokit"
            || (word.ends_with("/echokit") && !word.contains('='))
            || word.ends_with("echokit.wasm")
            || word.ends_with("/echokit.js")
        {
            until_operator(i + 1)
        } else if word == "cargo" && next == Some("run") {
            let rest = until_operator(i + 2);
            match rest.iter().position(|w| w == "--") {
                Some(dashes) => rest[dashes + 1..].to_vec(),
                None => Vec::new(),
            }
        } else if word == "just" && matches!(next, Some("serve" | "serve-wasm")) {
            let mut args = vec!["serve".to_owned()];
            args.extend(until_operator(i + 2));
            args
        } else {
            continue;
        };
        if !args.is_empty() {
            found.push(args);
        }
    }
    found
}

/// Whether a value in the docs stands for one the reader chooses
/// (`ADDR`, `IP:PORT`, `FILE...`, `"$JOB.hlog"`) rather than being one.
fn is_placeholder(value: &str) -> bool {
    value.contains("...")
        || value.contains('…')
        || value.contains('$')
        || (value.chars().any(|c| c.is_ascii_uppercase())
            && value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "[],:._-".contains(c)))
}

/// Whether `word` is an elision: `...` standing for what the reader adds.
fn is_elision(word: &str) -> bool {
    matches!(word, "..." | "…")
}

/// Whether `flag` (`--name` or `-n`) of `subcommand` takes a value.
fn takes_value(command: &clap::Command, subcommand: &str, flag: &str) -> bool {
    let Some(subcommand) = command.find_subcommand(subcommand) else {
        return false;
    };
    let named = |arg: &&clap::Arg| match flag.strip_prefix("--") {
        Some(long) => arg.get_long() == Some(long),
        None => flag.len() == 2 && arg.get_short() == flag.chars().nth(1),
    };
    subcommand
        .get_arguments()
        .find(named)
        .is_some_and(|arg| arg.get_action().takes_values())
}

/// `args` without their elisions, except one given as an option's value,
/// where it stands for the value (`--connect ...`).
fn without_elisions(command: &clap::Command, args: &[String]) -> Vec<String> {
    let subcommand = args.first().map(String::as_str).unwrap_or_default();
    let mut kept: Vec<String> = Vec::new();
    for arg in args {
        let value_of_option = kept
            .last()
            .is_some_and(|last| last.starts_with('-') && takes_value(command, subcommand, last));
        if !is_elision(arg) || value_of_option {
            kept.push(arg.clone());
        }
    }
    kept
}

/// Why `args` do not parse as an echokit command line, if they do not.
/// A required argument left out, or a placeholder given for a value or a
/// subcommand, is no drift: the docs show fragments and placeholders.
fn parse_error(args: &[String]) -> Option<String> {
    let command = cli::command();
    let args = without_elisions(&command, args);
    let argv = std::iter::once("echokit").chain(args.iter().map(String::as_str));
    let err = command.try_get_matches_from(argv).err()?;
    let placeholder = [ContextKind::InvalidValue, ContextKind::InvalidSubcommand]
        .into_iter()
        .any(|kind| match err.get(kind) {
            Some(ContextValue::String(value)) => is_placeholder(value),
            _ => false,
        });
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        | ErrorKind::MissingRequiredArgument => None,
        ErrorKind::ValueValidation | ErrorKind::InvalidValue | ErrorKind::InvalidSubcommand
            if placeholder =>
        {
            None
        }
        _ => {
            let rendered = err.render().to_string();
            Some(rendered.lines().next().unwrap_or_default().to_owned())
        }
    }
}

#[test]
fn every_echokit_command_line_parses() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in pages() {
        for (line, code) in code_lines(&page) {
            for args in echokit_args(&code) {
                checked += 1;
                if let Some(err) = parse_error(&args) {
                    failures.push(format!(
                        "{}:{line}: `echokit {}`: {err}",
                        page.path.display(),
                        args.join(" ")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} echokit command lines in the docs do not parse:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 30, "only {checked} echokit command lines found");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of `page`'s headings, a repeated one numbered as GitHub
/// numbers it (`-1`, `-2`).
fn anchors(page: &Page) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<String> = None;
    for (event, _) in page.events() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = &mut heading {
                    heading.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let count = seen.entry(base.clone()).or_default();
                anchors.insert(match *count {
                    0 => base.clone(),
                    n => format!("{base}-{n}"),
                });
                *count += 1;
            }
            _ => {}
        }
    }
    anchors
}

/// `path` with `.` and `..` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every link and image of `page` that is not to another site: its line,
/// the file it names (from the root; `page` itself for `#anchor`), and the
/// anchor, if any.
fn local_links(page: &Page) -> Vec<(usize, String, PathBuf, Option<String>)> {
    let mut links = Vec::new();
    for (event, range) in page.events() {
        let dest = match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => dest_url,
            _ => continue,
        };
        if dest.contains("://") || dest.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match dest.split_once('#') {
            Some((file, anchor)) => (file, Some(anchor.to_owned())),
            None => (&*dest, None),
        };
        let target = match file {
            "" => page.path.clone(),
            file => normalize(&page.path.parent().unwrap_or(Path::new("")).join(file)),
        };
        links.push((page.line(range.start), dest.to_string(), target, anchor));
    }
    links
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let pages = pages();
    let by_path: HashMap<&Path, &Page> = pages.iter().map(|p| (p.path.as_path(), p)).collect();
    let mut failures = Vec::new();
    for page in &pages {
        for (line, dest, target, anchor) in local_links(page) {
            let at = format!("{}:{line}: ({dest})", page.path.display());
            if !root().join(&target).exists() {
                failures.push(format!("{at}: {} does not exist", target.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            match by_path.get(target.as_path()) {
                Some(target_page) if anchors(target_page).contains(&anchor) => {}
                Some(_) => failures.push(format!(
                    "{at}: no heading of {} has the anchor #{anchor}",
                    target.display()
                )),
                None => failures.push(format!(
                    "{at}: anchors are checked only in README.md and docs/*.md"
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "broken links:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_readme_is_short_and_links_every_topic_page() {
    let pages = pages();
    let readme = &pages[0];
    let lines = readme.text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move detail into docs/"
    );
    let linked: BTreeSet<PathBuf> = local_links(readme)
        .into_iter()
        .map(|(_, _, target, _)| target)
        .collect();
    let unlinked: Vec<String> = pages[1..]
        .iter()
        .filter(|page| !linked.contains(&page.path))
        .map(|page| page.path.display().to_string())
        .collect();
    assert!(
        unlinked.is_empty(),
        "topic pages the README does not link to: {}",
        unlinked.join(", ")
    );
}

#[test]
fn console_examples_print_what_they_show() {
    trycmd::TestCases::new()
        .register_bin("echokit", trycmd::cargo::cargo_bin!("echokit"))
        .case("README.md")
        .case("docs/*.md");
}

/// The man pages, from the command line's definition: `echokit.1` and one
/// per subcommand (`echokit-serve.1`, ...), with their paths from the root.
fn man_pages() -> Vec<(PathBuf, Vec<u8>)> {
    let mut command = cli::command().disable_help_subcommand(true);
    command.build();
    let mut commands: Vec<clap::Command> = vec![command.clone()];
    commands.extend(
        command
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned(),
    );
    commands
        .into_iter()
        .map(|command| {
            let source = format!("echokit {}", env!("CARGO_PKG_VERSION"));
            let man = clap_mangen::Man::new(command).source(source);
            let mut page = Vec::new();
            man.render(&mut page)
                .expect("rendering into memory cannot fail");
            (Path::new("docs/man").join(man.get_filename()), page)
        })
        .collect()
}

/// The completion scripts, as `echokit completions SHELL` prints them,
/// with their paths from the root.
fn completion_scripts() -> Vec<(PathBuf, Vec<u8>)> {
    SHELLS
        .iter()
        .map(|shell| {
            let output = Command::new(env!("CARGO_BIN_EXE_echokit"))
                .args(["completions", &shell.to_string()])
                .output()
                .expect("echokit runs");
            assert!(
                output.status.success(),
                "echokit completions {shell}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let path = Path::new("docs/completions").join(shell.file_name("echokit"));
            (path, output.stdout)
        })
        .collect()
}

/// The files under `dir` (from the root), sorted.
fn files_in(dir: &str) -> BTreeSet<PathBuf> {
    match fs::read_dir(root().join(dir)) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| Path::new(dir).join(entry.file_name()))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

#[test]
fn generated_man_pages_and_completions_are_current() {
    let generated: Vec<(PathBuf, Vec<u8>)> = man_pages()
        .into_iter()
        .chain(completion_scripts())
        .collect();
    let overwrite = std::env::var(OVERWRITE_VAR).is_ok_and(|v| v == "overwrite");
    let kept: BTreeSet<PathBuf> = files_in("docs/man")
        .into_iter()
        .chain(files_in("docs/completions"))
        .collect();
    let wanted: BTreeSet<PathBuf> = generated.iter().map(|(path, _)| path.clone()).collect();
    let mut stale = Vec::new();
    for (path, content) in &generated {
        let full = root().join(path);
        if overwrite {
            fs::create_dir_all(full.parent().expect("a directory")).expect("can create it");
            fs::write(&full, content).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        } else if fs::read(&full).ok().as_deref() != Some(content.as_slice()) {
            stale.push(format!("{} differs from the command line", path.display()));
        }
    }
    for extra in kept.difference(&wanted) {
        match overwrite {
            true => fs::remove_file(root().join(extra)).expect("can remove it"),
            false => stale.push(format!("{} is generated no more", extra.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nrun `just man` to regenerate docs/man/ and docs/completions/",
        stale.join("\n")
    );
}
