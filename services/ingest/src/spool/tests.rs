//! The spool file on its own: order, torn tails, bounds, compaction.
use std::io::Read as _;

use super::*;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn records_come_back_in_order_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..3 {
        spool
            .append(format!("event-{i}").as_bytes(), now())
            .unwrap();
    }
    let first = spool.peek().unwrap().unwrap();
    assert_eq!(first.payload, b"event-0");
    spool.advance(&first).unwrap();
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.depth().events, 2);
    let mut seen = Vec::new();
    while let Some(next) = spool.peek().unwrap() {
        seen.push(String::from_utf8(next.payload.clone()).unwrap());
        spool.advance(&next).unwrap();
    }
    assert_eq!(seen, ["event-1", "event-2"]);
    assert!(spool.is_empty());
    assert_eq!(
        std::fs::metadata(dir.path().join("spool.log"))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_torn_tail_is_cut_and_the_whole_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(b"whole", now()).unwrap();
    drop(spool);
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join("spool.log"))
        .unwrap();
    file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap(); // half a header
    drop(file);
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.depth().events, 1);
    assert_eq!(spool.peek().unwrap().unwrap().payload, b"whole");
    spool.append(b"after", now()).unwrap();
    assert_eq!(spool.depth().events, 2);
}

#[test]
fn a_corrupted_record_ends_the_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(b"good", now()).unwrap();
    spool.append(b"flipped", now()).unwrap();
    drop(spool);
    let path = dir.path().join("spool.log");
    let mut bytes = Vec::new();
    File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.depth().events, 1);
}

#[test]
fn a_backlog_that_never_empties_stays_within_its_bound_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1000).unwrap();
    let disk = || {
        std::fs::metadata(dir.path().join("spool.log"))
            .unwrap()
            .len()
    };
    spool.append(&[0; 84], now()).unwrap(); // 100 bytes with its header
    // 100 rounds of one in, one out: 10,000 bytes through a 1,000-byte
    // spool that always holds at least one record.
    for i in 0..100u8 {
        spool.append(&[i; 84], now()).unwrap();
        let oldest = spool.peek().unwrap().unwrap();
        spool.advance(&oldest).unwrap();
        assert!(disk() <= 1000, "{} bytes on disk in round {i}", disk());
    }
    let last = spool.peek().unwrap().unwrap();
    assert_eq!(last.payload, [99; 84], "order kept across compactions");
    drop(last);
    drop(spool);
    let spool = Spool::open(dir.path(), 1000).unwrap();
    assert_eq!(spool.depth().events, 1, "and across a reopen");
    assert_eq!(spool.peek().unwrap().unwrap().payload, [99; 84]);
}

#[test]
fn a_batch_is_marked_replayed_at_once_and_its_position_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..10u8 {
        spool.append(&[i; 10], now()).unwrap();
    }
    let batch = spool.peek_batch(4, u64::MAX).unwrap();
    assert_eq!(batch.len(), 4);
    let big = spool.peek_batch(10, 30).unwrap();
    assert_eq!(
        big.len(),
        1,
        "26 bytes each: one fits in 30 (and one always goes)"
    );
    spool.advance_to(batch[3].end).unwrap();
    assert_eq!(spool.depth().events, 6);
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.peek().unwrap().unwrap().payload, [4; 10]);
}

#[test]
fn above_its_bound_the_spool_refuses_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 100).unwrap();
    spool.append(&[1; 60], now()).unwrap();
    assert!(matches!(
        spool.append(&[2; 60], now()),
        Err(SpoolError::Full { limit: 100 })
    ));
    let depth = spool.depth();
    assert_eq!((depth.events, depth.bytes), (1, 76));
    assert!(depth.oldest_ms.is_some());
}
