//! The `ftp>` shell: line editing, history and tab completion on a terminal
//! (rustyline), sftp's local commands, `mget`/`mput` with glob patterns; without a
//! terminal (or with `-b FILE`) a script that stops at the first failing command.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use udpft::net::client::{self, Client, ClientError, Entry, Report};
use udpft::text;

use crate::exit;

const HELP: &str = "\
commands (names with spaces in quotes: get \"my file.txt\"):
  ls [DIR], list [DIR]    list a directory on the server (default: its root)
  get REMOTE [LOCAL]      download a file; LOCAL may be a directory (a name ending
                          in '/' must be one), default: REMOTE's file name here
  put LOCAL [REMOTE]      upload a file; a REMOTE that is a directory on the server
                          (a name ending in '/' must be one) gets it inside
  mget PATTERN...         download every file on the server matching a glob
                          (*, ?, [abc]; e.g. mget 'logs/*.txt') into this directory
  mput PATTERN...         upload every local file matching a glob into the root
                          (a directory is skipped: mput DIR/* sends its files)
  delete REMOTE, rm       delete a file on the server (if the server allows it)
  lcd [DIR]               change the local directory (default: home)
  lpwd                    print the local directory
  lls [ARGS]              list the local directory (runs ls)
  !COMMAND                run COMMAND in a local shell; '!' alone starts one
  exit                    ask the server to stop (asks you to confirm), then leave
  quit, bye               leave the shell (the server keeps running)
  help, ?                 this text
A command written with a leading '-' (-get x) may fail without ending a script.
Tab completes commands, local paths and remote names.";

/// Every command, for completion.
const COMMANDS: [&str; 17] = [
    "ls", "list", "get", "put", "mget", "mput", "delete", "rm", "lcd", "lpwd", "lls", "exit",
    "quit", "bye", "help", "?", "!",
];

/// Splits a command line into words; `"..."` and `'...'` group words with spaces.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// How the shell is run.
pub struct ShellOptions {
    pub quiet: bool,
    /// `-b FILE`: commands from FILE (`-`: stdin), stop at the first failure.
    pub batch: Option<PathBuf>,
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// What a command line asks of the shell.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Leave,
}

/// The shell's state: the client, and the remote listings cached for completion.
struct Session {
    client: Client,
    label: String,
    quiet: bool,
    /// Asks before `exit` (stdin is a terminal).
    confirm: bool,
    cache: HashMap<String, Vec<Entry>>,
    /// About how much memory the cache holds: kept under [`client::LISTING_LIMIT`].
    cache_bytes: usize,
}

/// The shell: checks the server, then runs commands until `quit`, `bye`, `exit` or the
/// end of input. Returns the exit code: in a script (stdin not a terminal, or
/// `-b FILE`) that of the first failing command, where it stops; at a terminal that
/// of the last command.
pub fn run(mut client: Client, label: &str, opts: ShellOptions) -> u8 {
    // A batch file that cannot be read is reported before the server is bothered.
    let batch: Option<Box<dyn BufRead>> = match &opts.batch {
        Some(p) if p.as_os_str() != "-" => match std::fs::File::open(p) {
            Ok(f) => Some(Box::new(io::BufReader::new(f))),
            Err(e) => {
                eprintln!(
                    "udpft: cannot read the batch file '{}': {e}",
                    text::escape(&p.to_string_lossy())
                );
                return exit::OTHER;
            }
        },
        _ => None,
    };
    // Nothing is said about the server before it has answered. A TFTP server cannot be
    // asked anything without a transfer: it is not checked.
    let tftp = client.is_tftp();
    let peer = if tftp {
        client.addresses()[0]
    } else {
        match client.check() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("udpft: {e}");
                return exit::code(&e);
            }
        }
    };
    let interactive = opts.batch.is_none() && io::stdin().is_terminal();
    if !opts.quiet {
        if tftp {
            eprintln!(
                "TFTP server {label} ({peer}), not checked (TFTP cannot ask without a transfer); \
                 get and put only; type 'help' for commands"
            );
        } else {
            eprintln!("connected to {label} ({peer}); type 'help' for commands");
        }
    }
    let session = Rc::new(RefCell::new(Session {
        client,
        label: label.to_string(),
        quiet: opts.quiet,
        confirm: interactive,
        cache: HashMap::new(),
        cache_bytes: 0,
    }));
    let reset = || {
        if let Some(f) = &opts.interrupt {
            f.store(false, Ordering::Relaxed);
        }
    };
    if interactive {
        match Editor::<ShellHelper, DefaultHistory>::new() {
            Ok(mut ed) => {
                ed.set_helper(Some(ShellHelper {
                    session: session.clone(),
                }));
                let mut last = exit::OK;
                loop {
                    reset();
                    match ed.readline("ftp> ") {
                        Ok(line) => {
                            if !line.trim().is_empty() {
                                let _ = ed.add_history_entry(line.as_str());
                            }
                            let (next, code, _) = one_line(&session, &line, &mut ed);
                            last = code;
                            if next == Next::Leave {
                                break;
                            }
                        }
                        Err(rustyline::error::ReadlineError::Interrupted) => continue,
                        Err(rustyline::error::ReadlineError::Eof) => break,
                        Err(e) => {
                            eprintln!("udpft: reading the command line: {e}");
                            return exit::OTHER;
                        }
                    }
                }
                return last;
            }
            Err(e) => eprintln!("udpft: no line editing ({e}); reading plain lines"),
        }
    }
    let input: Box<dyn BufRead> = batch.unwrap_or_else(|| Box::new(io::stdin().lock()));
    // Without line editing nobody is asked anything (stdin is the command stream).
    session.borrow_mut().confirm = false;
    let mut plain = Plain;
    let mut n = 0;
    for line in input.lines() {
        n += 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("udpft: reading commands: {e}");
                return exit::OTHER;
            }
        };
        reset();
        let (next, code, may_fail) = one_line(&session, &line, &mut plain);
        if code != exit::OK && !may_fail && !interactive {
            eprintln!(
                "udpft: stopped at line {n} ({}), which failed",
                text::sanitize(line.trim())
            );
            return code;
        }
        if next == Next::Leave {
            return code;
        }
    }
    exit::OK
}

/// Asks a person a question.
trait Ask {
    fn ask(&mut self, prompt: &str) -> Option<String>;
}

impl Ask for Editor<ShellHelper, DefaultHistory> {
    fn ask(&mut self, prompt: &str) -> Option<String> {
        self.readline(prompt).ok()
    }
}

/// Plain lines (a script, or a terminal without line editing): nobody to ask.
struct Plain;

impl Ask for Plain {
    fn ask(&mut self, _prompt: &str) -> Option<String> {
        None
    }
}

/// Runs one command line. Returns what next, the exit code, and whether the command
/// was marked (`-`) as allowed to fail.
fn one_line(session: &Rc<RefCell<Session>>, line: &str, ask: &mut dyn Ask) -> (Next, u8, bool) {
    let trimmed = line.trim_start();
    if let Some(cmd) = trimmed.strip_prefix('!') {
        return (Next::Continue, local_shell(cmd.trim()), false);
    }
    let mut words = match split_words(line) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}; type 'help' for commands");
            return (Next::Continue, exit::USAGE, false);
        }
    };
    if words.is_empty() {
        return (Next::Continue, exit::OK, false);
    }
    let may_fail = words[0].len() > 1 && words[0].starts_with('-');
    if may_fail {
        words[0].remove(0);
    }
    let mut s = session.borrow_mut();
    let (next, result) = s.command(&words, ask);
    let code = match result {
        Ok(()) => exit::OK,
        Err(Failure::Usage(u)) => {
            eprintln!("{u}");
            exit::USAGE
        }
        Err(Failure::Client(e)) => {
            eprintln!("udpft: {e}");
            exit::code(&e)
        }
        Err(Failure::Code(c)) => c,
    };
    (next, code, may_fail)
}

/// Why a command failed (its message already printed for `Code`).
enum Failure {
    Usage(String),
    Client(ClientError),
    Code(u8),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

fn usage(u: &str) -> Result<(), Failure> {
    Err(Failure::Usage(format!("usage: {u}")))
}

impl Session {
    fn summary(&self, r: &Report) {
        if !self.quiet {
            eprintln!("{r}");
        }
    }

    fn command(&mut self, words: &[String], ask: &mut dyn Ask) -> (Next, Result<(), Failure>) {
        let (cmd, args) = words.split_first().expect("not empty");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = match (cmd.as_str(), args.as_slice()) {
            ("help" | "?", _) => {
                println!("{HELP}");
                Ok(())
            }
            ("quit" | "bye", []) => return (Next::Leave, Ok(())),
            ("exit", []) => return self.exit(ask),
            ("ls" | "list", [] | [_]) => self.list(args.first().copied()),
            ("get", [remote] | [remote, _]) => {
                let local = args.get(1).map(Path::new);
                self.client
                    .get(remote, local)
                    .map(|r| self.summary(&r))
                    .map_err(Failure::from)
            }
            ("put", [local] | [local, _]) => {
                self.clear_cache();
                self.client
                    .put(Path::new(local), args.get(1).copied())
                    .map(|r| self.summary(&r))
                    .map_err(Failure::from)
            }
            ("mget", [_, ..]) => self.mget(&args),
            ("mput", [_, ..]) => self.mput(&args),
            ("delete" | "rm", [remote]) => {
                self.clear_cache();
                self.client
                    .delete(remote)
                    .map(|r| self.summary(&r))
                    .map_err(Failure::from)
            }
            ("lcd", [] | [_]) => lcd(args.first().copied()),
            ("lpwd", []) => match std::env::current_dir() {
                Ok(d) => {
                    println!("{}", d.display());
                    Ok(())
                }
                Err(e) => Err(Failure::Client(ClientError::Local(format!(
                    "the local directory: {e}"
                )))),
            },
            ("lls", _) => lls(&args),
            ("cd", _) => Err(Failure::Usage(
                "the server has no current directory: name paths from its root \
                 (ls DIR, get DIR/FILE); lcd changes the local directory"
                    .into(),
            )),
            ("ls" | "list", _) => usage("ls [DIR]"),
            ("get", _) => usage("get REMOTE [LOCAL]"),
            ("put", _) => usage("put LOCAL [REMOTE]"),
            ("mget", _) => usage("mget PATTERN..."),
            ("mput", _) => usage("mput PATTERN..."),
            ("delete" | "rm", _) => usage("delete REMOTE"),
            ("lcd", _) => usage("lcd [DIR]"),
            ("quit" | "bye" | "exit" | "lpwd", _) => usage(&format!("{cmd} (takes no arguments)")),
            (other, _) => Err(Failure::Usage(format!(
                "unknown command '{}'; type 'help' for the list of commands",
                text::escape(other)
            ))),
        };
        (Next::Continue, r)
    }

    fn list(&mut self, dir: Option<&str>) -> Result<(), Failure> {
        let (text, _) = self.client.list(dir)?;
        self.remember(
            dir.unwrap_or("").trim_end_matches('/'),
            client::parse_listing(&text),
        );
        crate::progress::print_listing(&text);
        Ok(())
    }

    fn exit(&mut self, ask: &mut dyn Ask) -> (Next, Result<(), Failure>) {
        if self.confirm {
            let q = format!("stop the server at {} for everyone? [y/N] ", self.label);
            let yes = ask
                .ask(&q)
                .is_some_and(|a| matches!(a.trim(), "y" | "Y" | "yes" | "YES" | "Yes"));
            if !yes {
                eprintln!("not stopped; 'quit' leaves without stopping the server");
                return (Next::Continue, Ok(()));
            }
        }
        let r = self.client.exit().map(|r| self.summary(&r));
        (Next::Leave, r.map_err(Failure::from))
    }

    /// Every remote file matching the patterns, downloaded here.
    fn mget(&mut self, patterns: &[&str]) -> Result<(), Failure> {
        let mut worst = None;
        for pat in patterns {
            let (dir, file_pat) = match pat.rsplit_once('/') {
                Some((d, f)) => (Some(d), f),
                None => (None, *pat),
            };
            let matcher = glob::Pattern::new(file_pat).map_err(|e| {
                Failure::Usage(format!("'{}': not a pattern: {e}", text::escape(pat)))
            })?;
            let (listing, _) = self.client.list(dir.filter(|d| !d.is_empty()))?;
            let entries = client::parse_listing(&listing);
            let matched: Vec<&Entry> = entries
                .iter()
                .filter(|e| !e.is_dir() && matcher.matches(&e.name))
                .collect();
            // Every local name is checked before anything is fetched: a name the
            // server gave that cannot be a file here (NUL, too long, '.', '..', a '/',
            // control characters) or whose place is taken (a directory, a FIFO) is
            // refused, named, and the others are still fetched.
            let mut names = Vec::new();
            for e in &matched {
                let remote = match dir {
                    Some(d) => format!("{d}/{}", e.name),
                    None => e.name.clone(),
                };
                let checked = client::check_local_name(&e.name)
                    .map_err(|why| {
                        ClientError::Local(format!(
                            "not fetching '{}': the server's name cannot be a local file \
                             name ({why})",
                            text::escape(&remote)
                        ))
                    })
                    .and_then(|()| client::local_target(&remote, None));
                match checked {
                    Ok(local) if local.is_dir() => {
                        eprintln!(
                            "udpft: not fetching '{}': '{}' is a local directory",
                            text::escape(&remote),
                            text::escape(&local.to_string_lossy())
                        );
                        worst.get_or_insert(exit::OTHER);
                    }
                    Ok(_) => names.push(remote),
                    Err(e) => {
                        eprintln!("udpft: {e}");
                        worst.get_or_insert(exit::OTHER);
                    }
                }
            }
            if matched.is_empty() {
                let e = ClientError::Server {
                    code: udpft::engine::ErrorCode::NotFound,
                    message: format!("no file on the server matches '{pat}'"),
                };
                eprintln!("udpft: {e}");
                worst.get_or_insert(exit::code(&e));
                continue;
            }
            for name in names {
                match self.client.get(&name, None) {
                    Ok(r) => self.summary(&r),
                    Err(e) => {
                        eprintln!("udpft: {e}");
                        worst.get_or_insert(exit::code(&e));
                    }
                }
            }
        }
        worst.map_or(Ok(()), |c| Err(Failure::Code(c)))
    }

    /// Every local file matching the patterns, uploaded into the server's root.
    fn mput(&mut self, patterns: &[&str]) -> Result<(), Failure> {
        self.clear_cache();
        let mut worst = None;
        for pat in patterns {
            let paths = glob::glob(pat).map_err(|e| {
                Failure::Usage(format!("'{}': not a pattern: {e}", text::escape(pat)))
            })?;
            let (files, others): (Vec<PathBuf>, Vec<PathBuf>) =
                paths.flatten().partition(|p| p.is_file());
            // What matched but is no file is named, not passed over in silence.
            for p in &others {
                let shown = text::escape(&p.to_string_lossy()).into_owned();
                if p.is_dir() {
                    eprintln!(
                        "udpft: skipping '{shown}': a directory (mput sends files; \
                         'mput {shown}/*' sends the files in it)"
                    );
                } else {
                    eprintln!("udpft: skipping '{shown}': not a regular file");
                }
            }
            // As sftp: skipping is not a failure, a pattern that sends nothing is.
            if files.is_empty() {
                if others.is_empty() {
                    eprintln!("udpft: no local file matches '{}'", text::escape(pat));
                }
                worst.get_or_insert(exit::OTHER);
                continue;
            }
            for f in files {
                match self.client.put(&f, None) {
                    Ok(r) => self.summary(&r),
                    Err(e) => {
                        eprintln!("udpft: {e}");
                        worst.get_or_insert(exit::code(&e));
                    }
                }
            }
        }
        worst.map_or(Ok(()), |c| Err(Failure::Code(c)))
    }

    /// The entries of remote `dir` ("" for the root), from the cache or the server.
    fn remote_entries(&mut self, dir: &str) -> Vec<Entry> {
        if let Some(e) = self.cache.get(dir) {
            return e.clone();
        }
        let listed = self
            .client
            .list(if dir.is_empty() { None } else { Some(dir) })
            .map(|(t, _)| client::parse_listing(&t))
            .unwrap_or_default();
        self.remember(dir, listed.clone());
        listed
    }

    /// Caches the listing of `dir`; the cache is emptied first if it would grow past
    /// [`client::LISTING_LIMIT`] (one listing is at most that), so tabbing through a
    /// server's many directories cannot fill memory.
    fn remember(&mut self, dir: &str, entries: Vec<Entry>) {
        let size = cost(&entries);
        if self.cache_bytes.saturating_add(size) > client::LISTING_LIMIT {
            self.clear_cache();
        }
        self.cache_bytes += size;
        if let Some(old) = self.cache.insert(dir.to_string(), entries) {
            self.cache_bytes -= cost(&old);
        }
    }

    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
    }
}

/// About how much memory cached entries take.
fn cost(entries: &[Entry]) -> usize {
    entries
        .iter()
        .map(|e| e.name.len() + std::mem::size_of::<Entry>())
        .sum()
}

fn lcd(dir: Option<&str>) -> Result<(), Failure> {
    let target = match dir {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h),
            None => return usage("lcd DIR (HOME is not set)"),
        },
    };
    std::env::set_current_dir(&target).map_err(|e| {
        Failure::Client(ClientError::Local(format!(
            "cannot change to local directory '{}': {e}",
            target.display()
        )))
    })
}

fn lls(args: &[&str]) -> Result<(), Failure> {
    match std::process::Command::new("ls").args(args).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err(Failure::Code(exit::OTHER)),
        Err(e) => Err(Failure::Client(ClientError::Local(format!(
            "cannot run ls: {e}"
        )))),
    }
}

/// `!command` (or `!` alone: an interactive shell). A command that fails is a failure.
fn local_shell(cmd: &str) -> u8 {
    let shell = std::env::var_os("SHELL").unwrap_or_else(|| "/bin/sh".into());
    let mut c = std::process::Command::new(&shell);
    if !cmd.is_empty() {
        c.arg("-c").arg(cmd);
    }
    match c.status() {
        Ok(s) if s.success() => exit::OK,
        Ok(s) => {
            eprintln!("udpft: '{}' failed ({s})", text::escape(cmd));
            exit::OTHER
        }
        Err(e) => {
            eprintln!("udpft: cannot run {}: {e}", Path::new(&shell).display());
            exit::OTHER
        }
    }
}

/// What the word under the cursor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Remote,
    Local,
    Nothing,
}

/// What argument `index` (0 = the first after the command) of `cmd` names.
fn arg_kind(cmd: &str, index: usize) -> Kind {
    let cmd = cmd.strip_prefix('-').unwrap_or(cmd);
    match (cmd, index) {
        ("get", 0) | ("ls" | "list" | "delete" | "rm", 0) | ("mget", _) => Kind::Remote,
        ("get", 1) | ("put", 0) | ("mput" | "lls", _) | ("lcd", 0) => Kind::Local,
        ("put", 1) => Kind::Remote,
        _ => Kind::Nothing,
    }
}

/// Completes the word before `pos` in `line`: returns where the word starts and the
/// candidates that replace it. `remote` lists a remote directory ("" for the root).
fn complete(
    line: &str,
    pos: usize,
    remote: &mut dyn FnMut(&str) -> Vec<Entry>,
) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before.rfind(char::is_whitespace).map_or(0, |i| {
        i + before[i..].chars().next().map_or(1, char::len_utf8)
    });
    let word = &before[start..];
    let earlier: Vec<&str> = before[..start].split_whitespace().collect();
    let kind = match earlier.split_first() {
        None => Kind::Command,
        Some((cmd, args)) => arg_kind(cmd, args.len()),
    };
    let (dir, partial) = match word.rsplit_once('/') {
        Some((d, p)) => (Some(d), p),
        None => (None, word),
    };
    let prefix = dir.map_or(String::new(), |d| format!("{d}/"));
    let quote = |s: String| {
        if s.contains(char::is_whitespace) {
            format!("\"{s}\"")
        } else {
            s
        }
    };
    let mut out: Vec<String> = match kind {
        Kind::Command => COMMANDS
            .iter()
            .filter(|c| c.starts_with(word))
            .map(|c| format!("{c} "))
            .collect(),
        // A name with control or invisible characters is never a candidate: raw it
        // would drive the terminal, escaped it would name another file.
        Kind::Remote => remote(dir.unwrap_or(""))
            .into_iter()
            .filter(|e| e.name.starts_with(partial) && client::check_local_name(&e.name).is_ok())
            .map(|e| {
                let slash = if e.is_dir() { "/" } else { "" };
                quote(format!("{prefix}{}{slash}", e.name))
            })
            .collect(),
        Kind::Local => {
            let d = match dir {
                Some("") => Path::new("/"),
                Some(d) => Path::new(d),
                None => Path::new("."),
            };
            std::fs::read_dir(d)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| {
                            let name = e.file_name().into_string().ok()?;
                            if !name.starts_with(partial)
                                || (name.starts_with('.') && !partial.starts_with('.'))
                                || client::check_local_name(&name).is_err()
                            {
                                return None;
                            }
                            let slash = if e.path().is_dir() { "/" } else { "" };
                            Some(quote(format!("{prefix}{name}{slash}")))
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        Kind::Nothing => Vec::new(),
    };
    out.sort();
    (start, out)
}

/// rustyline's view of the shell: completion only.
struct ShellHelper {
    session: Rc<RefCell<Session>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        // While a command runs the session is borrowed; nothing is completed then.
        let Ok(mut s) = self.session.try_borrow_mut() else {
            return Ok((pos, Vec::new()));
        };
        let (start, words) = complete(line, pos, &mut |dir| s.remote_entries(dir));
        Ok((
            start,
            words
                .into_iter()
                .map(|w| Pair {
                    display: w.clone(),
                    replacement: w,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(split_words("get a b").unwrap(), ["get", "a", "b"]);
        assert_eq!(
            split_words("  put \"a b\" 'c d'  ").unwrap(),
            ["put", "a b", "c d"]
        );
        assert_eq!(split_words("get \"\"").unwrap(), ["get", ""]);
        assert!(split_words("get \"a").is_err());
        assert!(split_words("   ").unwrap().is_empty());
    }

    #[test]
    fn the_completion_cache_is_bounded() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let mut s = Session {
            client: Client::to(addr, client::ClientOptions::default()),
            label: String::new(),
            quiet: true,
            confirm: false,
            cache: HashMap::new(),
            cache_bytes: 0,
        };
        let big = || vec![entry(&"n".repeat(client::LISTING_LIMIT / 3), Some(1))];
        for dir in ["a", "b", "c", "d", "e"] {
            s.remember(dir, big());
            assert!(s.cache_bytes <= client::LISTING_LIMIT);
            assert_eq!(s.cache_bytes, s.cache.values().map(|e| cost(e)).sum());
        }
        assert!(s.cache.len() < 5 && s.cache.contains_key("e"));
        s.remember("e", vec![entry("small", None)]);
        assert_eq!(s.cache_bytes, s.cache.values().map(|e| cost(e)).sum());
    }

    fn entry(name: &str, size: Option<u64>) -> Entry {
        Entry {
            name: name.into(),
            size,
        }
    }

    #[test]
    fn completes_commands_remote_names_and_local_paths() {
        let asked = RefCell::new(Vec::new());
        let mut remote = |dir: &str| {
            asked.borrow_mut().push(dir.to_string());
            match dir {
                "" => vec![
                    entry("notes.txt", Some(3)),
                    entry("nested", None),
                    entry("other", Some(1)),
                ],
                "nested" => vec![entry("deep file", Some(1))],
                _ => Vec::new(),
            }
        };
        assert_eq!(complete("mg", 2, &mut remote), (0, vec!["mget ".into()]));
        assert_eq!(
            complete("l", 1, &mut remote).1,
            ["lcd ", "list ", "lls ", "lpwd ", "ls "]
        );
        assert_eq!(
            complete("get n", 5, &mut remote),
            (4, vec!["nested/".into(), "notes.txt".into()])
        );
        assert_eq!(
            complete("get nested/d", 12, &mut remote),
            (4, vec!["\"nested/deep file\"".into()])
        );
        assert_eq!(*asked.borrow(), ["", "nested"]);
        // Local paths: put's first argument, get's second.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("alpha.bin"), b"").unwrap();
        std::fs::create_dir(d.path().join("albums")).unwrap();
        let base = d.path().display().to_string();
        let line = format!("put {base}/al");
        let (start, got) = complete(&line, line.len(), &mut remote);
        assert_eq!(start, 4);
        assert_eq!(
            got,
            [format!("{base}/albums/"), format!("{base}/alpha.bin")]
        );
        let line = format!("get notes.txt {base}/alp");
        let (_, got) = complete(&line, line.len(), &mut remote);
        assert_eq!(got, [format!("{base}/alpha.bin")]);
        // Names with control or invisible characters are never candidates (raw they
        // would reach the terminal, escaped they would name another file).
        let mut evil = |_: &str| {
            vec![
                entry("e\u{1b}]0;pwned\u{7}", Some(1)),
                entry("e\nline", Some(1)),
                entry("e\u{202e}txt", Some(1)),
                entry("e\\ok", Some(1)),
            ]
        };
        assert_eq!(complete("get e", 5, &mut evil).1, ["e\\ok"]);
        std::fs::write(d.path().join("al\u{1b}[2J"), b"").unwrap();
        let line = format!("put {base}/al");
        assert_eq!(complete(&line, line.len(), &mut remote).1.len(), 2);
        // Nothing to complete after delete's one argument.
        assert!(complete("delete a ", 9, &mut remote).1.is_empty());
    }
}
