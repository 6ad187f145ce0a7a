//! The delivery threads' tests, against receivers on loopback: order, headers, retries,
//! giving up.

use std::io::Write;
use std::net::TcpListener;
use std::sync::mpsc;

use super::*;

/// A request as the receiver saw it: its head's lines and its body.
struct Seen {
    head: Vec<String>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        let prefix = format!("{name}: ");
        self.head
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.head))
    }
}

/// A receiver answering each request with the next status of `statuses` (then 200),
/// sending what it saw.
fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for c in l.incoming() {
            let mut c = c.unwrap();
            let got = String::from_utf8(client::tests::read_request(&mut c)).unwrap();
            let (head, body) = got.split_once("\r\n\r\n").unwrap();
            let status = statuses.next().unwrap_or(200);
            let _ = write!(c, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let seen = Seen {
                head: head.lines().map(str::to_owned).collect(),
                body: body.to_owned(),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// A queue holding one delivery to `url` per id, given up at `expires`.
fn queue(dir: &std::path::Path, url: &str, ids: &[&str], expires: u64) -> Outbox {
    let outbox = Outbox::at(dir);
    std::fs::create_dir_all(outbox.dir()).unwrap();
    for id in ids {
        let body = format!("{{\"id\":\"{id}\"}}");
        let d = Delivery {
            id: (*id).to_owned(),
            url: url.to_owned(),
            event: "publish".into(),
            signature: format!("sha256={id}"),
            expires,
            body,
        };
        let path = outbox.dir().join(format!("{id}.json"));
        std::fs::write(path, serde_json::to_vec(&d).unwrap()).unwrap();
    }
    outbox
}

fn recv(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a delivery within 20 s")
}

/// Waits until the queue's folder holds `n` deliveries.
fn wait_for_queue(outbox: &Outbox, n: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    while outbox.list().unwrap().len() != n {
        assert!(Instant::now() < until, "{:?}", outbox.list());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn deliveries_go_in_order_with_their_headers_and_leave_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(Vec::new());
    let outbox = queue(tmp.path(), &url, &["1-a", "2-b", "3-c"], now() + 60);
    let stats = Arc::new(Stats::default());
    let d = Deliverer::start(outbox.clone(), stats.clone()).unwrap();
    for id in ["1-a", "2-b", "3-c"] {
        let seen = recv(&rx);
        assert_eq!(seen.head[0], "POST /hook HTTP/1.1");
        assert_eq!(seen.header("X-Palletizer-Delivery"), id);
        assert_eq!(seen.header("X-Palletizer-Event"), "publish");
        assert_eq!(
            seen.header("X-Palletizer-Signature"),
            format!("sha256={id}")
        );
        assert_eq!(seen.header("Content-Type"), "application/json");
        assert_eq!(seen.body, format!("{{\"id\":\"{id}\"}}"));
    }
    wait_for_queue(&outbox, 0);
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 3);
    // Queued later: found when poked.
    queue(tmp.path(), &url, &["4-d"], now() + 60);
    d.poke();
    assert_eq!(recv(&rx).header("X-Palletizer-Delivery"), "4-d");
    wait_for_queue(&outbox, 0);
}

#[test]
fn a_failing_receiver_gets_the_same_delivery_again_and_a_refusing_one_gives_it_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(vec![503, 500, 200, 404]);
    let outbox = queue(tmp.path(), &url, &["1-a", "2-b"], now() + 60);
    let stats = Arc::new(Stats::default());
    let _d = Deliverer::start(outbox.clone(), stats.clone()).unwrap();
    let ids: Vec<String> = (0..4)
        .map(|_| recv(&rx).header("X-Palletizer-Delivery").to_owned())
        .collect();
    // Retried after 1 s and 2 s, in order: the second waits for the first.
    assert_eq!(ids, ["1-a", "1-a", "1-a", "2-b"]);
    wait_for_queue(&outbox, 0);
    assert_eq!(stats.retried.load(Ordering::Relaxed), 2);
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 1);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1, "the 404");
}

#[test]
fn a_delivery_past_its_retry_time_is_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let outbox = queue(tmp.path(), &url, &["1-old"], now() - 1);
    queue(tmp.path(), &url, &["2-new"], now() + 3600);
    std::fs::write(outbox.dir().join("0-bad.json"), "{").unwrap();
    let stats = Arc::new(Stats::default());
    let _d = Deliverer::start(outbox.clone(), stats.clone()).unwrap();
    // The expired one and the broken file go; the other waits for its receiver.
    wait_for_queue(&outbox, 1);
    assert_eq!(outbox.list().unwrap(), ["2-new.json"]);
    let until = Instant::now() + Duration::from_secs(20);
    while stats.retried.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(stats.failed.load(Ordering::Relaxed), 2);
    assert_eq!(stats.queued.load(Ordering::Relaxed), 1);
}

#[test]
fn back_off_doubles_up_to_its_cap() {
    let secs: Vec<u64> = [1, 2, 3, 9, 10, 40].map(|f| backoff(f).as_secs()).to_vec();
    assert_eq!(secs, [1, 2, 4, 256, 300, 300]);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
}
