// Two plain boringtun Tunns in memory with the mock clock: client pings the server every
// `every` seconds for 20 simulated minutes; the server answers. Counts unanswered pings and
// handshakes. new_tunn_impl!(s, p, idx) is replaced per version (0.6.0 returns Result).
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use mock_instant::MockClock;
use std::time::Duration;

#[cfg(bt06)]
macro_rules! new_tunn_impl {
    ($s:expr, $p:expr, $i:expr) => {
        Tunn::new($s, $p, None, None, $i, None).unwrap()
    };
}
#[cfg(not(bt06))]
macro_rules! new_tunn_impl {
    ($s:expr, $p:expr, $i:expr) => {
        Tunn::new($s, $p, None, None, $i, None)
    };
}

fn new_tunn(s: StaticSecret, p: PublicKey, idx: u32) -> Tunn {
    new_tunn_impl!(s, p, idx)
}

fn ping(n: u16) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0, 100, 64, 0, 2, 10, 10, 1, 1,
    ];
    p.extend_from_slice(&[8, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&n.to_be_bytes());
    p
}

fn deliver(to: &mut Tunn, d: &[u8], out: &mut Vec<Vec<u8>>, tun: &mut Vec<Vec<u8>>) {
    let mut buf = vec![0u8; 2048];
    let mut first = true;
    loop {
        let r = if first {
            to.decapsulate(Some("192.0.2.1".parse().unwrap()), d, &mut buf)
        } else {
            to.decapsulate(None, &[], &mut buf)
        };
        first = false;
        match r {
            TunnResult::WriteToNetwork(b) => out.push(b.to_vec()),
            TunnResult::WriteToTunnelV4(p, _) => {
                tun.push(p.to_vec());
                break;
            }
            _ => break,
        }
    }
}

fn run(every: u64) -> (u64, u64, u64) {
    MockClock::set_time(Duration::ZERO);
    let (cs, ss) = (StaticSecret::from([2u8; 32]), StaticSecret::from([1u8; 32]));
    let (cp, sp) = (PublicKey::from(&cs), PublicKey::from(&ss));
    let mut c = new_tunn(cs, sp, 1);
    let mut s = new_tunn(ss, cp, 2);
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut hs = 0u64;
    let mut buf = vec![0u8; 2048];
    for sec in 1..=1200u64 {
        MockClock::advance(Duration::from_secs(1));
        let mut to_s: Vec<Vec<u8>> = Vec::new();
        let mut to_c: Vec<Vec<u8>> = Vec::new();
        if let TunnResult::WriteToNetwork(b) = c.update_timers(&mut buf) {
            to_s.push(b.to_vec())
        }
        if let TunnResult::WriteToNetwork(b) = s.update_timers(&mut buf) {
            to_c.push(b.to_vec())
        }
        let mut got_reply = false;
        if sec % every == 0 {
            sent += 1;
            if let TunnResult::WriteToNetwork(b) = c.encapsulate(&ping(sec as u16), &mut buf) {
                to_s.push(b.to_vec())
            }
        }
        for _ in 0..20 {
            let (mut s_tun, mut c_tun) = (Vec::new(), Vec::new());
            let mut next_c = Vec::new();
            hs += to_s.iter().filter(|d| d.len() == 148).count() as u64;
            for d in to_s.drain(..) {
                deliver(&mut s, &d, &mut next_c, &mut s_tun)
            }
            for p in s_tun {
                let mut r = p.clone();
                r[12..16].copy_from_slice(&p[16..20]);
                r[16..20].copy_from_slice(&p[12..16]);
                if let TunnResult::WriteToNetwork(b) = s.encapsulate(&r, &mut buf) {
                    next_c.push(b.to_vec())
                }
            }
            to_c.extend(next_c);
            for d in to_c.drain(..) {
                deliver(&mut c, &d, &mut to_s, &mut c_tun)
            }
            if !c_tun.is_empty() {
                got_reply = true
            }
            if to_s.is_empty() {
                break;
            }
        }
        if sec % every == 0 && !got_reply {
            lost += 1
        }
    }
    (sent, lost, hs)
}

fn main() {
    for every in [1u64, 7, 13] {
        let (sent, lost, hs) = run(every);
        println!(
            "boringtun {} every={every}s sent={sent} unanswered={lost} initiations={hs}",
            env!("BT_VERSION_LABEL")
        );
    }
}
