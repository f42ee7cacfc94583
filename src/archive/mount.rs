//! The unmounted-share guard of `-I`: an NFS share that is not mounted is
//! an empty directory on the root filesystem, and `-I` must not mark it (an
//! archive call would then write WAL there, and a restore would answer
//! "not found" from it).
//!
//! A directory must be on a mounted filesystem when `/etc/fstab` lists it or
//! a directory above it as a mount point, or when `require_mount: on` says
//! so for every `local_archivedirs` entry. "Mounted" means: on another
//! device than its parent directory, or listed in `/proc/self/mountinfo`
//! (a bind mount of the same filesystem keeps the device).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const FSTAB: &str = "/etc/fstab";
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// fstab(5) and mountinfo escape blanks and backslashes as octal (`\040`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points an fstab lists (second field), except swap and `/`.
pub fn fstab_mount_points(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mp = unescape(f.get(1)?);
            let fstype = f.get(2).copied().unwrap_or("");
            (mp.starts_with('/') && mp != "/" && fstype != "swap")
                .then(|| crate::config::validate::lexical(Path::new(&mp)))
        })
        .collect()
}

/// `dir` with symlinks resolved as far as it exists (an archive directory
/// may be a symlink to a share, and may not exist yet).
fn resolve(dir: &Path) -> PathBuf {
    let mut existing = crate::config::validate::lexical(dir);
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = fs::canonicalize(&existing) {
            return rest
                .iter()
                .rev()
                .fold(real, |p: PathBuf, c: &std::ffi::OsString| p.join(c));
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                existing = parent.to_path_buf();
            }
            _ => return crate::config::validate::lexical(dir),
        }
    }
}

/// Is something mounted at `mp`? Another device than its parent, or a
/// mount point in `mountinfo` (bind mounts keep the device).
pub fn is_mounted(mp: &Path, mountinfo: &str) -> bool {
    let (Ok(here), Ok(parent)) = (fs::metadata(mp), fs::metadata(mp.join(".."))) else {
        return false;
    };
    here.dev() != parent.dev() || listed_in(&crate::config::validate::lexical(mp), mountinfo)
}

/// Why `-I` must not prepare `dir`, if it must not.
pub fn check(dir: &Path, fstab: &Path, require_mount: bool) -> Result<(), String> {
    let fstab_text = fs::read_to_string(fstab).unwrap_or_default();
    let mountinfo = fs::read_to_string(MOUNTINFO).unwrap_or_default();
    let real = resolve(dir);
    let shown = if real == crate::config::validate::lexical(dir) {
        dir.display().to_string()
    } else {
        format!("{} (really {})", dir.display(), real.display())
    };
    rule(&shown, &real, &fstab_text, fstab, require_mount, |mp| {
        is_mounted(mp, &mountinfo)
    })
}

/// The same guard for a directory on another host (a slave's
/// `r_archivedir`), from what one remote command reported: its fstab, its
/// mountinfo, the directory with symlinks resolved, and the device of that
/// directory and of every directory above it.
pub fn check_remote(
    shown: &str,
    real: &Path,
    fstab_text: &str,
    fstab: &Path,
    mountinfo: &str,
    devices: &std::collections::HashMap<PathBuf, u64>,
) -> Result<(), String> {
    let mounted = |mp: &Path| {
        let mp = crate::config::validate::lexical(mp);
        let parent = mp.parent().map(Path::to_path_buf).unwrap_or_else(|| mp.clone());
        match (devices.get(&mp), devices.get(&parent)) {
            (Some(a), Some(b)) if a != b => true,
            _ => listed_in(&mp, mountinfo),
        }
    };
    rule(shown, real, fstab_text, fstab, false, mounted)
}

fn listed_in(mp: &Path, mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|m| Path::new(&unescape(m)) == mp)
}

/// The guard itself: the innermost mount point `fstab` lists at or above
/// `real` must be mounted; with `require_mount`, some directory at or
/// above it must be a mount.
fn rule(
    shown: &str,
    real: &Path,
    fstab_text: &str,
    fstab: &Path,
    require_mount: bool,
    is_mounted: impl Fn(&Path) -> bool,
) -> Result<(), String> {
    // The innermost listed mount point at or above the directory.
    let listed = fstab_mount_points(fstab_text)
        .into_iter()
        .filter(|mp| real.starts_with(mp))
        .max_by_key(|mp| mp.components().count());
    if let Some(mp) = listed {
        if !is_mounted(&mp) {
            return Err(format!(
                "{shown} should be on the filesystem mounted at {} ({} lists it), but nothing is mounted there: pitrkit does not prepare an archive on the root filesystem. Mount it, then run -I again",
                mp.display(),
                fstab.display()
            ));
        }
    }
    if require_mount {
        let mounted = real.ancestors().filter(|a| a.parent().is_some()).any(&is_mounted);
        if !mounted {
            return Err(format!(
                "require_mount is on, but neither {shown} nor a directory above it is a mounted filesystem: is the share mounted? Mount it, then run -I again"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_parsing() {
        let text = "# /etc/fstab\n\
                    UUID=1 / ext4 defaults 0 1\n\
                    \n\
                    nas:/wal /mnt/nfs/wal nfs4 rw,hard 0 0   # the archive\n\
                    /dev/sdb2 none swap sw 0 0\n\
                    /dev/sdb3 /srv/my\\040share/ ext4 defaults 0 2\n\
                    tmpfs\t/run/x tmpfs defaults 0 0\n";
        assert_eq!(
            fstab_mount_points(text),
            vec![
                PathBuf::from("/mnt/nfs/wal"),
                PathBuf::from("/srv/my share"),
                PathBuf::from("/run/x")
            ]
        );
    }

    #[test]
    fn a_listed_mount_point_must_be_mounted_under_it_too() {
        let d = tempfile::tempdir().unwrap();
        let share = d.path().join("share");
        fs::create_dir(&share).unwrap();
        let fstab = d.path().join("fstab");
        // /proc is mounted everywhere tests run: on another device than /.
        fs::write(
            &fstab,
            format!(
                "nas:/wal {} nfs rw 0 0\nproc /proc proc defaults 0 0\n",
                share.display()
            ),
        )
        .unwrap();
        for dir in [share.clone(), share.join("archive"), share.join("./a/../archive/")] {
            let e = check(&dir, &fstab, false).unwrap_err();
            assert!(
                e.contains(&format!("should be on the filesystem mounted at {}", share.display()))
                    && e.contains("Mount it, then run -I again"),
                "{e}"
            );
        }
        // Through a symlink, too.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&share, &link).unwrap();
        assert!(check(&link.join("archive"), &fstab, false)
            .unwrap_err()
            .contains("really"));
        // Plain local directories stay allowed; a mounted one passes.
        assert!(check(&d.path().join("local"), &fstab, false).is_ok());
        assert!(check(Path::new("/proc/sys"), &fstab, false).is_ok());
        // require_mount: a plain directory is refused, one on a mount passes.
        // (Not under the temporary directory: /tmp may be a mount of its own.)
        let e = check(Path::new("/nonexistent-pitrkit/archive"), &fstab, true).unwrap_err();
        assert!(e.contains("require_mount is on"), "{e}");
        assert!(check(Path::new("/proc/sys/kernel"), &fstab, true).is_ok());
        assert!(check(&d.path().join("local"), &d.path().join("no-fstab"), false).is_ok());
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape(r"/a\040b\\c"), r"/a b\\c");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
    }
}
