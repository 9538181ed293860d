//! What the three programs share on the command line (only with the `cli` feature):
//! the man page and shell completions, generated from each program's clap definition.

use std::io::{self, Write};

/// What `--generate` writes, from the program's own clap definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// A man page (roff), for `man -l` or a man1 directory.
    Man,
    Bash,
    Zsh,
    Fish,
    Elvish,
    #[value(name = "powershell")]
    PowerShell,
}

/// Writes the man page or the completions of `cmd` (the program's full definition).
/// A closed pipe (`--generate man | head`) is not an error.
pub fn generate(what: Generate, mut cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    // Rendered in memory first: clap_complete panics on a failed write.
    let mut text = Vec::new();
    let shell = match what {
        Generate::Man => Err(clap_mangen::Man::new(cmd.clone()).render(&mut text)?),
        Generate::Bash => Ok(Shell::Bash),
        Generate::Zsh => Ok(Shell::Zsh),
        Generate::Fish => Ok(Shell::Fish),
        Generate::Elvish => Ok(Shell::Elvish),
        Generate::PowerShell => Ok(Shell::PowerShell),
    };
    if let Ok(shell) = shell {
        clap_complete::generate(shell, &mut cmd, name, &mut text);
    }
    match out.write_all(&text).and_then(|_| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}
