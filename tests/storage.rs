//! The served root (`udpft::storage`): confinement by directory handle, regular files
//! only, all-or-nothing files and their sweeping. Every confinement test runs with both
//! resolvers: the kernel's `openat2(RESOLVE_BENEATH)` and the `O_NOFOLLOW` walk that
//! stands in for it on older kernels.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use udpft::engine::Sink;
use udpft::storage::{
    AtomicFile, Resolver, Root, TempFiles, check_name, listing, sweep_dir, sweep_tree,
};
use udpft::wire::ErrorCode;

fn roots(dir: &Path) -> Vec<Root> {
    vec![
        Root::new(dir).unwrap().with_resolver(Resolver::Openat2),
        Root::new(dir).unwrap().with_resolver(Resolver::Walk),
    ]
}

fn read(root: &Root, name: &str) -> Result<Vec<u8>, ErrorCode> {
    let mut f = root.open_file(name).map_err(|r| r.code)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    Ok(v)
}

fn put(root: &Root, name: &str, data: &[u8], overwrite: bool) -> Result<(), ErrorCode> {
    let mut f = root.create(name, overwrite).map_err(|r| r.code)?;
    f.write_all(data).unwrap();
    f.commit().map_err(|_| ErrorCode::Io)
}

/// Names of everything in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn names_are_checked_by_component() {
    assert!(check_name("a/b.txt").is_ok());
    assert_eq!(check_name("./a").unwrap(), Path::new("a"));
    assert_eq!(check_name("").unwrap_err().code, ErrorCode::BadRequest);
    assert_eq!(check_name("a\0b").unwrap_err().code, ErrorCode::BadRequest);
    for bad in [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "d/.udpft-0123456789abcdef.part",
    ] {
        assert_eq!(
            check_name(bad).unwrap_err().code,
            ErrorCode::AccessDenied,
            "{bad}"
        );
    }
    // A name that merely contains dots is fine.
    assert!(check_name("..hidden").is_ok());
    // Refusals show the name escaped: one log line stays one line.
    let r = check_name("../a\nb\u{1b}[31m").unwrap_err();
    assert!(
        !r.message.contains('\n') && !r.message.contains('\u{1b}'),
        "{r}"
    );
}

/// Symlinks that stay inside work; every way out is refused with access denied, for
/// get, put (with and without overwrite), delete and list, and nothing outside changes.
#[test]
fn symlinks_inside_work_and_every_way_out_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out_name = outside.path().file_name().unwrap().to_str().unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    fs::write(d.join("sub/f"), b"inside").unwrap();
    symlink("sub/f", d.join("rel")).unwrap();
    symlink("../sub", d.join("sub/loop")).unwrap();
    symlink("sub", d.join("subdir")).unwrap();
    symlink(outside.path(), d.join("abs_out")).unwrap();
    symlink(format!("../{out_name}"), d.join("rel_out")).unwrap();
    symlink(outside.path().join("secret"), d.join("s")).unwrap();
    symlink("..", d.join("up")).unwrap();
    symlink("nowhere", d.join("dangling")).unwrap();
    symlink("a", d.join("b")).unwrap();
    symlink("b", d.join("a")).unwrap();
    // An absolute link, even to a place inside the root, is refused (RESOLVE_BENEATH).
    symlink(d.join("sub/f"), d.join("abs_in")).unwrap();
    for root in roots(d) {
        let how = format!("{:?}", root.resolver());
        assert_eq!(read(&root, "sub/f").unwrap(), b"inside", "{how}");
        assert_eq!(read(&root, "rel").unwrap(), b"inside", "{how}");
        assert_eq!(read(&root, "subdir/f").unwrap(), b"inside", "{how}");
        assert_eq!(read(&root, "sub/loop/loop/f").unwrap(), b"inside", "{how}");
        assert_eq!(read(&root, "nope"), Err(ErrorCode::NotFound), "{how}");
        for name in [
            "abs_out/secret",
            "rel_out/secret",
            "s",
            "up/x",
            "abs_in",
            "subdir/../rel_out/secret",
        ] {
            assert_eq!(
                read(&root, name),
                Err(ErrorCode::AccessDenied),
                "{how} get {name}"
            );
            for overwrite in [false, true] {
                let r = put(&root, name, b"evil", overwrite);
                assert_eq!(
                    r,
                    Err(ErrorCode::AccessDenied),
                    "{how} put {name} {overwrite}"
                );
            }
            let r = root.delete(name).map_err(|r| r.code);
            assert_eq!(r, Err(ErrorCode::AccessDenied), "{how} delete {name}");
        }
        for name in ["a", "dangling"] {
            assert_ne!(read(&root, name), Ok(Vec::new()), "{how} {name}");
            assert_eq!(root.delete(name).unwrap_err().code, ErrorCode::AccessDenied);
        }
        for name in ["abs_out", "rel_out", "up", "abs_out/"] {
            let r = listing(&root, name).map_err(|r| r.code);
            assert_eq!(r, Err(ErrorCode::AccessDenied), "{how} list {name}");
        }
        // Writing through a symlinked directory inside the root lands inside.
        put(&root, "subdir/new", b"n", false).unwrap();
        assert_eq!(fs::read(d.join("sub/new")).unwrap(), b"n");
        root.delete("subdir/new").unwrap();
        assert!(!d.join("sub/new").exists());
    }
    assert_eq!(names(outside.path()), ["secret"]);
    assert_eq!(fs::read(outside.path().join("secret")).unwrap(), b"secret");
}

/// Put with overwrite replaces the directory entry: a symlink inside the root is
/// replaced by the file, its target left alone; a hard-linked file keeps its other
/// names' contents.
#[test]
fn overwrite_replaces_the_entry_not_what_it_points_to() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("target"), b"old").unwrap();
    symlink("target", d.join("link")).unwrap();
    fs::hard_link(d.join("target"), d.join("hard")).unwrap();
    let root = Root::new(d).unwrap();
    assert_eq!(
        put(&root, "link", b"x", false),
        Err(ErrorCode::AlreadyExists)
    );
    put(&root, "link", b"new link", true).unwrap();
    put(&root, "hard", b"new hard", true).unwrap();
    assert!(!fs::symlink_metadata(d.join("link")).unwrap().is_symlink());
    assert_eq!(fs::read(d.join("link")).unwrap(), b"new link");
    assert_eq!(fs::read(d.join("hard")).unwrap(), b"new hard");
    assert_eq!(fs::read(d.join("target")).unwrap(), b"old");
}

/// FIFOs and sockets are refused by what they are, at once (a FIFO with no writer
/// would block an open for reading for ever), and left out of listings.
#[test]
fn special_files_are_refused_by_type_and_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        d.join("pipe"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    fs::write(d.join("file"), b"12345").unwrap();
    fs::create_dir(d.join("dir")).unwrap();
    symlink("pipe", d.join("to_pipe")).unwrap();
    for root in roots(d) {
        let start = Instant::now();
        for (name, what) in [
            ("pipe", "'pipe' is a FIFO, not a regular file"),
            ("to_pipe", "'to_pipe' is a FIFO, not a regular file"),
            ("sock", "'sock' is a socket, not a regular file"),
            ("dir", "'dir' is a directory (use list)"),
        ] {
            let r = root.open_file(name).unwrap_err();
            assert_eq!((r.code, r.message.as_str()), (ErrorCode::BadRequest, what));
        }
        assert!(start.elapsed() < Duration::from_secs(5), "an open blocked");
        for name in ["pipe", "sock"] {
            assert_eq!(
                root.create(name, true).unwrap_err().code,
                ErrorCode::BadRequest
            );
            assert_eq!(root.delete(name).unwrap_err().code, ErrorCode::BadRequest);
        }
        assert_eq!(root.delete("dir").unwrap_err().code, ErrorCode::BadRequest);
        let text = String::from_utf8(listing(&root, ".").unwrap()).unwrap();
        assert_eq!(text, "-\tdir/\n5\tfile\n");
    }
}

#[test]
fn listings_escape_names_and_hide_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("two\nlines\u{1b}[2J"), b"xy").unwrap();
    fs::write(d.join(".udpft-0123456789abcdef.part"), b"partial").unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    fs::write(d.join("sub/inner"), b"abc").unwrap();
    symlink("sub/inner", d.join("in")).unwrap();
    let root = Root::new(d).unwrap();
    let text = String::from_utf8(listing(&root, ".").unwrap()).unwrap();
    assert_eq!(text, "3\tin\n-\tsub/\n2\ttwo\\nlines\\x1b[2J\n");
    let text = String::from_utf8(listing(&root, "sub").unwrap()).unwrap();
    assert_eq!(text, "3\tinner\n");
    assert_eq!(
        listing(&root, "in").unwrap_err().code,
        ErrorCode::BadRequest
    );
}

/// An atomic file shows nothing under its name before the commit, and nothing at all
/// when dropped without one; unnamed by default, named (and locked) in the fallback.
#[test]
fn atomic_files_appear_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dest = d.join("f");
    {
        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"half").unwrap();
        assert!(f.temp_name().is_none(), "this filesystem has O_TMPFILE");
        assert_eq!(names(d), Vec::<String>::new());
    }
    assert_eq!(names(d), Vec::<String>::new());
    let mut f = AtomicFile::create(&dest, false).unwrap();
    f.write_all(b"hello").unwrap();
    f.commit().unwrap();
    drop(f);
    assert_eq!(fs::read(&dest).unwrap(), b"hello");
    // Without overwrite, a file that appeared meanwhile wins; with it, it is replaced.
    let mut f = AtomicFile::create(&dest, false).unwrap();
    f.write_all(b"other").unwrap();
    assert_eq!(
        f.commit().unwrap_err().kind(),
        std::io::ErrorKind::AlreadyExists
    );
    drop(f);
    assert_eq!(fs::read(&dest).unwrap(), b"hello");
    let mut f = AtomicFile::create(&dest, true).unwrap();
    f.write_all(b"new").unwrap();
    f.commit().unwrap();
    drop(f);
    assert_eq!(fs::read(&dest).unwrap(), b"new");
    assert_eq!(names(d), ["f"]);
}

/// The fallback's named temporary files: a living owner's is never swept; a dead
/// owner's is (in the directory, and anywhere below the root at a server's start).
#[test]
fn sweeping_removes_only_the_dead() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("a/b")).unwrap();
    let root = Root::new(d).unwrap().with_temp_files(TempFiles::Named);
    let mut live = root.create("f", false).unwrap();
    live.write_all(b"live").unwrap();
    let temp = live.temp_name().expect("named in the fallback").to_owned();
    assert_eq!(names(d), [temp.to_str().unwrap(), "a"]);
    // Leftovers of killed owners: nobody holds their lock.
    let dead = [
        ".udpft-00000000000000aa.part",
        "a/b/.udpft-00000000000000bb.part",
    ];
    for p in dead {
        fs::write(d.join(p), b"dead").unwrap();
    }
    assert_eq!(sweep_dir(root.handle()).unwrap(), 1);
    assert!(d.join(&temp).exists(), "a living upload's file was swept");
    assert_eq!(sweep_tree(root.handle()).unwrap(), 1);
    assert!(!d.join(dead[1]).exists());
    live.commit().unwrap();
    drop(live);
    assert_eq!(fs::read(d.join("f")).unwrap(), b"live");
    assert_eq!(names(d), ["a", "f"]);
    // Dropped without a commit, the named file goes too; with overwrite, the same.
    for overwrite in [false, true] {
        let mut f = root.create("g", overwrite).unwrap();
        f.write_all(b"x").unwrap();
        drop(f);
        assert_eq!(names(d), ["a", "f"]);
    }
    put(&root, "f", b"replaced", true).unwrap();
    assert_eq!(fs::read(d.join("f")).unwrap(), b"replaced");
    assert_eq!(names(d), ["a", "f"]);
}

/// A name ending in `/` names a directory: it is never taken for the file.
#[test]
fn a_trailing_slash_names_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/f"), b"x").unwrap();
    for root in roots(dir.path()) {
        for name in ["sub/f/", "sub/f/."] {
            let r = root.open_file(name).unwrap_err();
            assert_eq!(r.code, ErrorCode::BadRequest, "{name}");
            assert!(r.message.contains("names a directory"), "{r}");
            assert_eq!(
                root.create(name, true).unwrap_err().code,
                ErrorCode::BadRequest
            );
            assert_eq!(root.delete(name).unwrap_err().code, ErrorCode::BadRequest);
        }
        assert!(listing(&root, "sub/").is_ok());
    }
    assert_eq!(fs::read(dir.path().join("sub/f")).unwrap(), b"x");
}

/// Found by the attacker: the sweep removed users' own files that merely looked like
/// leftovers (`.udpft-notes.part`). Now only our exact names, owned by the sweeping
/// user, are ever removed.
#[test]
fn sweeping_never_touches_a_users_look_alike_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mine = ".udpft-00000000000000cc.part";
    let look_alikes = [
        ".udpft-notes.part",
        ".udpft-00000000000000CC.part",
        ".udpft-0000000000000000c.part",
    ];
    for n in look_alikes.iter().chain([&mine]) {
        fs::write(d.join(n), b"user data").unwrap();
    }
    let root = Root::new(d).unwrap();
    assert_eq!(sweep_tree(root.handle()).unwrap(), 1);
    let mut want: Vec<String> = look_alikes.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names(d), want);
    // A file of our exact shape that belongs to another user is not ours to remove
    // (only root can make one here; the suite runs as root in CI).
    if rustix::process::geteuid().is_root() {
        fs::write(d.join(mine), b"user data").unwrap();
        std::os::unix::fs::chown(d.join(mine), Some(65534), Some(65534)).unwrap();
        assert_eq!(sweep_tree(root.handle()).unwrap(), 0);
        assert!(d.join(mine).exists());
    } else {
        eprintln!("not root: the other-owner half of this test did not run");
    }
}

/// The attack that broke name-based checks: a local user swaps a directory inside the
/// root with a symlink that leads out (`renameat2(RENAME_EXCHANGE)` in a loop) while
/// get, put, put with overwrite and delete run. Nothing outside may ever be read,
/// written or removed, with either resolver.
#[test]
fn swapping_a_directory_for_a_symlink_never_leads_outside() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("f"), b"OUTSIDE").unwrap();
    fs::write(victim.join("del"), b"OUTSIDE").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    fs::create_dir(d.join("d")).unwrap();
    fs::write(d.join("d/f"), b"INSIDE").unwrap();
    let out_name = outside.path().file_name().unwrap().to_str().unwrap();
    symlink(format!("../{out_name}/victim"), d.join("l")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, d) = (stop.clone(), d.clone());
        std::thread::spawn(move || {
            let root = fs::File::open(&d).unwrap();
            let mut swaps = 0u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                rustix::fs::renameat_with(
                    &root,
                    "d",
                    &root,
                    "l",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    for root in roots(&d) {
        let (mut ok, mut refused) = ([0u32; 4], [0u32; 4]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0;
        // Until every operation has both succeeded and been refused a few times (the
        // swap really raced it), within a bound.
        while (ok.iter().chain(&refused).any(|&n| n < 3) || i < 2000) && Instant::now() < deadline {
            i += 1;
            let k = i % 4;
            let r = match k {
                0 => read(&root, "d/f").map(|got| {
                    assert_eq!(got, b"INSIDE", "read outside the root");
                }),
                1 => put(&root, &format!("d/new{i}"), b"INSIDE", false),
                2 => put(&root, "d/f", b"INSIDE", true),
                _ => {
                    // Only "d/del" inside may go: make sure one is there first.
                    let _ = put(&root, "d/del", b"INSIDE", true);
                    root.delete("d/del").map_err(|r| r.code)
                }
            };
            match r {
                Ok(()) => ok[k] += 1,
                Err(_) => refused[k] += 1,
            }
        }
        assert!(
            ok.iter().all(|&n| n > 0),
            "{:?}: ok {ok:?}",
            root.resolver()
        );
        assert!(
            refused.iter().all(|&n| n > 0),
            "{:?}: refused {refused:?}",
            root.resolver()
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0);
    assert_eq!(names(&victim), ["del", "f"]);
    assert_eq!(fs::read(victim.join("f")).unwrap(), b"OUTSIDE");
    assert_eq!(fs::read(victim.join("del")).unwrap(), b"OUTSIDE");
    assert_eq!(names(outside.path()), ["victim"]);
}
