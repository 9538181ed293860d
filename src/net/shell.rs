//! The interactive `ftp>` shell: line editing and history on a terminal (rustyline),
//! plain lines from stdin otherwise (so scripts and tests can drive it).

use std::io::{self, BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;

use super::client::{self, ClientError, ClientOptions};

const HELP: &str = "\
commands:
  ls [DIR], list [DIR]    list a directory on the server (default: its root)
  get REMOTE [LOCAL]      download a file (LOCAL may be a directory)
  put LOCAL [REMOTE]      upload a file
  delete REMOTE           delete a file on the server (if the server allows it)
  exit                    ask the server to exit, then leave the shell
  quit, bye               leave the shell (the server keeps running)
  help, ?                 this text
names with spaces can be quoted: get \"my file.txt\"";

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

/// What the shell does after a command.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Leave,
}

/// Runs the shell against `server` until `quit`, `bye`, `exit` or end of input.
/// Returns the exit code: 0, or that of the last command if it failed.
pub fn run(server: SocketAddr, label: &str, opts: &ClientOptions) -> u8 {
    let mut last = 0;
    let interactive = io::stdin().is_terminal();
    if interactive {
        match rustyline::DefaultEditor::new() {
            Ok(mut ed) => {
                if !opts.quiet {
                    eprintln!("connected to {label} ({server}); type 'help' for commands");
                }
                loop {
                    if let Some(f) = &opts.interrupt {
                        f.store(false, std::sync::atomic::Ordering::Relaxed);
                    }
                    match ed.readline("ftp> ") {
                        Ok(line) => {
                            if !line.trim().is_empty() {
                                let _ = ed.add_history_entry(line.as_str());
                            }
                            if one_line(server, &line, opts, &mut last) == Next::Leave {
                                break;
                            }
                        }
                        Err(rustyline::error::ReadlineError::Interrupted) => continue,
                        Err(rustyline::error::ReadlineError::Eof) => break,
                        Err(e) => {
                            eprintln!("udpft: reading the command line: {e}");
                            return client::exit_code::OTHER;
                        }
                    }
                }
                return last;
            }
            Err(e) => eprintln!("udpft: no line editing ({e}); reading plain lines"),
        }
    }
    let stdin = io::stdin();
    let mut line = String::new();
    loop {
        if interactive {
            print!("ftp> ");
            let _ = io::stdout().flush();
        }
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {
                if one_line(server, &line, opts, &mut last) == Next::Leave {
                    break;
                }
            }
            Err(e) => {
                eprintln!("udpft: reading stdin: {e}");
                return client::exit_code::OTHER;
            }
        }
    }
    last
}

fn one_line(server: SocketAddr, line: &str, opts: &ClientOptions, last: &mut u8) -> Next {
    let words = match split_words(line) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}; type 'help' for commands");
            *last = client::exit_code::USAGE;
            return Next::Continue;
        }
    };
    let Some((cmd, args)) = words.split_first() else {
        return Next::Continue;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let usage = |u: &str| {
        eprintln!("usage: {u}");
        Err(ClientError {
            message: String::new(),
            code: client::exit_code::USAGE,
        })
    };
    let result: Result<(), ClientError> = match (cmd.as_str(), args.as_slice()) {
        ("help" | "?", _) => {
            println!("{HELP}");
            Ok(())
        }
        ("quit" | "bye", []) => return Next::Leave,
        ("ls" | "list", [] | [_]) => {
            client::list(server, args.first().copied(), opts).map(|(text, _)| {
                let mut out = io::stdout().lock();
                let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            })
        }
        ("get", [remote] | [remote, _]) => {
            let local = args.get(1).map(Path::new);
            client::get(server, remote, local, opts).map(|r| summary(opts, &r))
        }
        ("put", [local] | [local, _]) => {
            client::put(server, Path::new(local), args.get(1).copied(), opts)
                .map(|r| summary(opts, &r))
        }
        ("delete" | "rm", [remote]) => {
            client::delete(server, remote, opts).map(|r| summary(opts, &r))
        }
        ("exit", []) => {
            match client::exit(server, opts) {
                Ok(r) => {
                    summary(opts, &r);
                    *last = 0;
                }
                Err(e) => {
                    eprintln!("udpft: {e}");
                    *last = e.code;
                }
            }
            return Next::Leave;
        }
        ("ls" | "list", _) => usage("ls [DIR]"),
        ("get", _) => usage("get REMOTE [LOCAL]"),
        ("put", _) => usage("put LOCAL [REMOTE]"),
        ("delete" | "rm", _) => usage("delete REMOTE"),
        ("quit" | "bye" | "exit", _) => usage(&format!("{cmd} (takes no arguments)")),
        (other, _) => {
            eprintln!("unknown command '{other}'; type 'help' for the list of commands");
            Err(ClientError {
                message: String::new(),
                code: client::exit_code::USAGE,
            })
        }
    };
    match result {
        Ok(()) => *last = 0,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("udpft: {e}");
            }
            *last = e.code;
        }
    }
    Next::Continue
}

fn summary(opts: &ClientOptions, r: &client::Report) {
    if !opts.quiet {
        eprintln!("{r}");
    }
}

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
}
