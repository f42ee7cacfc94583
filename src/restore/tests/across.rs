//! Restore across files: records crossing into a neighbour segment, page
//! timelines against the name and the archive's timeline history.

use super::*;

/// Segments 3 and 4 of one stream, a record of 30 kB crossing from 3
/// into 4; and where that record starts in 3.
fn crossing_pair() -> (Vec<u8>, Vec<u8>, usize) {
    let mut b = testsupport::Builder::segments(S3, 7, 2);
    b.fill(SEG as usize - 200);
    b.record(30_000, 10, 0);
    let at = *b.starts.last().unwrap();
    b.fill(2 * SEG as usize - 3000).switch();
    (b.data[..SEG as usize].to_vec(), b.data[SEG as usize..].to_vec(), at)
}

const S4: &str = "000000010000000000000004";

#[test]
fn a_record_crossing_into_a_neighbour_is_checked_without_stored_checksums() {
    let (a, b, _) = crossing_pair();
    let packed = |data: &[u8]| zstd::bulk::compress(data, 1).unwrap(); // no content checksum
    for zst in [false, true] {
        let put = |env: &Env, n: &str, data: &[u8]| {
            if zst {
                env.archive_legacy(&format!("{n}.zst"), &packed(data));
            } else {
                env.archive_legacy(n, data);
            }
        };
        // Intact: both served.
        let env = Env::new("");
        put(&env, S3, &a);
        put(&env, S4, &b);
        env.restore(S3).unwrap();
        env.restore(S4).unwrap();
        // A flip in 3's part (its last byte), then in 4's part: caught
        // from either side, naming both files.
        for (in3, at) in [(true, SEG as usize - 1), (false, 40 + 5000)] {
            let env = Env::new("");
            let (mut a2, mut b2) = (a.clone(), b.clone());
            if in3 {
                a2[at] ^= 0x01;
            } else {
                b2[at] ^= 0x01;
            }
            put(&env, S3, &a2);
            put(&env, S4, &b2);
            for n in [S3, S4] {
                let e = env.restore(n).unwrap_err();
                assert!(
                    matches!(e, RestoreError::DamagedAcross { .. }),
                    "zst {zst}, flip in 3 {in3}, {n}: {e}"
                );
                let msg = e.to_string();
                assert!(msg.contains(S3) && msg.contains(S4) && msg.contains("CRC-32C"), "{msg}");
                assert!(env.pg_wal_files().is_empty());
            }
            // The neighbour not in the archive (yet): served; the record
            // is checked when the neighbour is restored.
            let other = if in3 { S4 } else { S3 };
            let stored = env.archive.join(format!("{other}{}", if zst { ".zst" } else { "" }));
            fs::remove_file(stored).unwrap();
            env.restore(if in3 { S3 } else { S4 }).unwrap();
        }
    }
    // The first segment of timeline 2 finishes a record of timeline 1's
    // segment before it: the history names which one to read.
    let t2 = "000000020000000000000004";
    let mut b2 = b.clone();
    for p in (0x80000..SEG as usize).step_by(8192) {
        b2[p + 4..p + 8].copy_from_slice(&2u32.to_le_bytes());
    }
    let env = Env::new("");
    env.archive("00000002.history", b"1\t0/480000\tno recovery target specified\n");
    env.archive_legacy(t2, &b2);
    env.archive_legacy("000000020000000000000003", &a); // another branch's: never read
    let mut a2 = a.clone();
    a2[SEG as usize - 1] ^= 0x01;
    env.archive_legacy(S3, &a2);
    let e = env.restore(t2).unwrap_err();
    assert!(e.to_string().contains(&format!("{S3}:")), "{e}");
    env.archive_legacy(S3, &a);
    fs::write(env.archive.join("000000020000000000000003"), &a2).unwrap();
    env.restore(t2).unwrap();

    // A neighbour with a stored checksum still lends its part.
    let env = Env::new("");
    let mut a2 = a.clone();
    a2[SEG as usize - 1] ^= 0x01;
    env.archive_legacy(S3, &a2);
    env.archive(S4, &b);
    assert!(matches!(env.restore(S3), Err(RestoreError::DamagedAcross { .. })));
    env.restore(S4).unwrap(); // checksummed: its bytes are vouched for, not walked
}

/// `data` with every page header on timeline `tli`.
fn on_timeline(data: &[u8], tli: u32) -> Vec<u8> {
    let mut d = data.to_vec();
    for p in (0..d.len()).step_by(8192) {
        d[p + 4..p + 8].copy_from_slice(&tli.to_le_bytes());
    }
    d
}

/// Review 2: PostgreSQL writes a history whose switch point goes back
/// (a PITR on timeline 1 stopping before timeline 2's switch, target
/// timeline 'latest'). It restores, and the segment before a record
/// past the end of recovery is the new timeline's, as
/// tliOfPointInHistory finds it, not timeline 1's.
#[test]
fn a_history_going_back_restores_and_names_the_segment_before() {
    let (a, b, _) = crossing_pair();
    let (t3, t4) = ("000000030000000000000003", "000000030000000000000004");
    let env = Env::new("");
    // Timeline 1 ran to 0/500000, timeline 2 "until" 0/280000, where
    // the PITR on timeline 1 ended: timeline 3 from there.
    env.archive(
        "00000003.history",
        b"1\t0/500000\tno recovery target specified\n\n2\t0/280000\tbefore 2026-11-30 06:29:15+00\n",
    );
    env.restore("00000003.history").unwrap();
    env.archive_legacy(t3, &on_timeline(&a, 3));
    env.archive_legacy(t4, &on_timeline(&b, 3));
    // Timeline 1's own segment 3 (a branch timeline 3 left): never read.
    let mut a2 = a.clone();
    a2[SEG as usize - 1] ^= 0x01;
    env.archive_legacy(S3, &a2);
    env.restore(t4).unwrap();
    env.restore(t3).unwrap();
    // Damage in timeline 3's segment 3 is found from segment 4's side.
    env.archive_legacy(t3, &on_timeline(&a2, 3));
    let e = env.restore(t4).unwrap_err();
    assert!(e.to_string().contains(&format!("{t3}:")), "{e}");
}

/// Review 2: a neighbour still being written (an archive_command of
/// plain cp) is short or empty: the intact segment is served, as with
/// no neighbour at all. Only a neighbour a stored checksum vouches
/// complete makes the shortness damage.
#[test]
fn a_neighbour_still_being_copied_cannot_fail_an_intact_segment() {
    let (a, b, _) = crossing_pair();
    for short in [0, 8192, 20_000] {
        let env = Env::new("");
        env.archive_legacy(S3, &a);
        env.archive_legacy(S4, &b[..short]);
        env.restore(S3).unwrap();
        // A cut compressed file: not vouched for either.
        fs::remove_file(env.archive.join(S4)).unwrap();
        let p = env.archive_compressed(S4, Codec::Zstd, &b);
        let packed = fs::read(&p).unwrap();
        fs::write(&p, &packed[..short.min(packed.len() / 2)]).unwrap();
        env.restore(S3).unwrap();
        // From the other side: the previous segment still being copied.
        let env = Env::new("");
        env.archive_legacy(S3, &a[..short]);
        env.archive_legacy(S4, &b);
        env.restore(S4).unwrap();
    }
    // Short, but complete by its stored checksum: damage.
    let env = Env::new("");
    env.archive_legacy(S3, &a);
    env.archive(S4, &b[..8192]);
    assert!(matches!(env.restore(S3), Err(RestoreError::DamagedAcross { .. })));
    fs::remove_file(env.archive.join(S4)).unwrap();
    fs::remove_file(env.archive.join(integrity::sum_name(S4))).unwrap();
    env.archive_compressed(S4, Codec::Zstd, &b[..8192]);
    assert!(matches!(env.restore(S3), Err(RestoreError::DamagedAcross { .. })));
    // A sidecar that does not match the short file: still being written.
    fs::remove_file(env.archive.join(format!("{S4}.zst"))).unwrap();
    env.archive(S4, &b);
    fs::write(env.archive.join(S4), &b[..8192]).unwrap();
    env.restore(S3).unwrap();
}

/// Review 2: a `.partial` whose WAL ends on its first page restores.
#[test]
fn a_partial_ending_on_its_first_page_restores() {
    let p = "000000010000000000000003.partial";
    let mut b = testsupport::Builder::new(p, 7);
    b.record(96, 10, 0);
    let env = Env::new("");
    env.archive_legacy(p, &b.data);
    env.restore(p).unwrap();
}

#[test]
fn page_timelines_are_checked_in_every_stored_form_against_the_name_and_history() {
    // Timeline 2's pages under timeline 1's name, with a sidecar and compressed.
    let mut tl2 = wal(S3, 7);
    for p in (0..SEG as usize).step_by(8192) {
        tl2[p + 4..p + 8].copy_from_slice(&2u32.to_le_bytes());
    }
    let env = Env::new("");
    env.archive(S3, &tl2);
    let e = env.restore(S3).unwrap_err();
    assert!(matches!(e, RestoreError::WrongSegment { .. }), "{e}");
    assert!(e.to_string().contains("timeline 2 is above"), "{e}");
    fs::remove_file(env.archive.join(S3)).unwrap();
    env.archive_compressed(S3, Codec::Zstd, &tl2);
    assert!(matches!(env.restore(S3), Err(RestoreError::WrongSegment { .. })));
    // Only a later page says so.
    let mut later = wal(S3, 7);
    later[20 * 8192 + 4..20 * 8192 + 8].copy_from_slice(&2u32.to_le_bytes());
    env.archive_compressed(S3, Codec::Lz4, &later);
    fs::remove_file(env.archive.join(format!("{S3}.zst"))).unwrap();
    let e = env.restore(S3).unwrap_err();
    assert!(e.to_string().contains("above the file name's timeline"), "{e}");
    assert!(env.pg_wal_files().is_empty());

    // Timeline 1's pages under timeline 2's name: fine before the switch
    // point that 00000002.history names, not past it.
    let t2 = "000000020000000000000003";
    let env = Env::new("");
    env.archive(t2, &wal(S3, 7));
    env.restore(t2).unwrap();
    env.archive("00000002.history", b"1\t0/400000\tno recovery target specified\n");
    env.restore(t2).unwrap();
    env.archive("00000002.history", b"1\t0/380000\tno recovery target specified\n");
    let e = env.restore(t2).unwrap_err();
    assert!(matches!(e, RestoreError::WrongSegment { .. }), "{e}");
    assert!(e.to_string().contains("where timeline 1 ended"), "{e}");

    // A history file cut at a line boundary passes its own check (its
    // last entry need not be the timeline below), but a segment of its
    // timeline holding pages of the parent it no longer lists does not.
    let t3 = "000000030000000000000003";
    let mut tl2 = wal(S3, 7);
    for p in (0..SEG as usize).step_by(8192) {
        tl2[p + 4..p + 8].copy_from_slice(&2u32.to_le_bytes());
    }
    let env = Env::new("");
    env.archive("00000003.history", b"1\t0/200000\tr\n2\t0/400000\tr\n");
    env.restore("00000003.history").unwrap();
    env.archive(t3, &tl2);
    env.restore(t3).unwrap();
    env.archive("00000003.history", b"1\t0/200000\tr\n");
    env.restore("00000003.history").unwrap();
    let e = env.restore(t3).unwrap_err();
    assert!(e.to_string().contains("not in the history of timeline 3"), "{e}");
}
