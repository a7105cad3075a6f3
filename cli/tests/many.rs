//! Many resources: `sparsebuf proxy BASE_URL` in front of nginx, and `sparsebuf serve DIR`.
//! Every body is compared with the file it comes from; nginx's access log counts the bytes the
//! proxy fetched.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use common::command::Serving;
use common::curl::curl;
use common::data;

/// The body bytes nginx sent, over every request it answered.
fn upstream_bytes(nginx: &common::nginx::Nginx) -> u64 {
    nginx
        .requests()
        .iter()
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn proxy_serves_each_path_of_nginx_from_one_shared_fetch() {
    let root = tempfile::tempdir().unwrap();
    let film = data(3_000_000, 31);
    let clip = data(700_000, 32);
    std::fs::write(root.path().join("film.bin"), &film).unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    std::fs::write(root.path().join("sub/clip.mp4"), &clip).unwrap();
    let nginx = common::nginx::Nginx::start(
        root.path(),
        "types { video/mp4 mp4; } default_type application/x-origin;",
    );
    let base = nginx.url("");
    let proxy = Serving::with_args(&["proxy", &base, "--listen", "127.0.0.1:0", "--quiet"]);

    // 8 clients at once on the cold object, each reading all of it: one fetch for all.
    let url = format!("{}film.bin", proxy.url);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl(&url, &[]))
        })
        .collect();
    for client in clients {
        let got = client.join().unwrap();
        assert_eq!(got.status, 200);
        assert!(got.body == film);
    }
    let fetched = upstream_bytes(&nginx);
    assert!(
        fetched <= film.len() as u64 * 102 / 100,
        "{fetched} bytes fetched for 8 clients of {} bytes",
        film.len()
    );

    // Ranges of another path, with the upstream's type and validators passed on.
    let url = format!("{}sub/clip.mp4", proxy.url);
    let got = curl(&url, &["-H", "Range: bytes=650000-"]);
    assert_eq!(got.status, 206);
    assert!(got.body == clip[650_000..]);
    assert_eq!(got.header("content-type"), Some("video/mp4"));
    let direct = curl(&nginx.url("sub/clip.mp4"), &["-I"]);
    assert_eq!(got.header("etag"), direct.header("etag"));
    assert_eq!(got.header("last-modified"), direct.header("last-modified"));
    assert_eq!(
        got.header("content-range"),
        Some("bytes 650000-699999/700000")
    );
    // The upstream's own type, whatever the extension says.
    let got = curl(&format!("{}film.bin", proxy.url), &["-I"]);
    assert_eq!(got.header("content-type"), Some("application/x-origin"));

    // A 404 stays a 404; a query is part of the key (nginx ignores it: same bytes).
    let got = curl(&format!("{}missing.bin", proxy.url), &[]);
    assert_eq!(got.status, 404);
    let got = curl(
        &format!("{}film.bin?v=2", proxy.url),
        &["-H", "Range: bytes=0-9"],
    );
    assert_eq!(got.status, 206);
    assert!(got.body == film[..10]);
    let keyed = nginx
        .requests()
        .iter()
        .filter(|line| line.starts_with("GET "))
        .count();
    assert!(keyed >= 4, "the query's resource was fetched anew");

    // The upstream changes: a response is the old version or the new one, never a mix, and
    // within a few requests the new one (a fetch that finds the change marks the buffer
    // stale; the next request opens it anew).
    let new_clip = data(900_000, 36);
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(root.path().join("sub/clip.mp4"), &new_clip).unwrap();
    let mut seen_new = false;
    for _ in 0..4 {
        let got = curl(&url, &["-H", "Range: bytes=0-"]);
        match got.status {
            502 => continue,
            206 if got.body == new_clip => {
                seen_new = true;
                break;
            }
            206 => assert!(got.body == clip, "a mix of versions"),
            other => panic!("status {other}"),
        }
    }
    assert!(seen_new, "the proxy kept serving the old version");

    // No path leaves the base URL.
    let got = curl(&format!("{}sub/../film.bin", proxy.url), &["--path-as-is"]);
    assert_eq!(got.status, 403);
    let got = curl(&format!("{}sub%2Fclip.mp4", proxy.url), &[]);
    assert_eq!(got.status, 404);
}

#[test]
fn serve_dir_serves_files_by_path_and_nothing_outside() {
    let outside = tempfile::tempdir().unwrap();
    let secret = b"not to be served".to_vec();
    std::fs::write(outside.path().join("secret.txt"), &secret).unwrap();
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (data(2_500_000, 33), data(100_000, 34));
    std::fs::write(root.path().join("a.bin"), &a).unwrap();
    std::fs::create_dir(root.path().join("films")).unwrap();
    std::fs::write(root.path().join("films/clip.mp4"), &b).unwrap();
    // A name that is not UTF-8.
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9.bin");
    std::fs::write(root.path().join(raw), &b[..1000]).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    std::os::unix::fs::symlink(root.path().join("a.bin"), root.path().join("alias.bin")).unwrap();
    let dir = root.path().to_str().unwrap();
    let serving = Serving::start(dir, std::process::Stdio::null(), &["--quiet"]);

    let got = curl(
        &format!("{}a.bin", serving.url),
        &["-H", "Range: bytes=-4096"],
    );
    assert_eq!(got.status, 206);
    assert!(got.body == a[a.len() - 4096..]);
    let got = curl(&format!("{}films/clip.mp4", serving.url), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == b);
    assert_eq!(got.header("content-type"), Some("video/mp4"));
    let got = curl(&format!("{}caf%E9.bin", serving.url), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == b[..1000]);
    // A link inside the directory is followed.
    let got = curl(
        &format!("{}alias.bin", serving.url),
        &["-H", "Range: bytes=5-9"],
    );
    assert!(got.body == a[5..10]);

    for (path, status) in [
        ("out/secret.txt", 403),
        ("films/../../secret.txt", 403),
        ("films/%2e%2e/a.bin", 403),
        ("films%2Fclip.mp4", 404),
        ("films", 404),
        ("nothing.bin", 404),
        ("a.bin%00", 404),
    ] {
        let got = curl(&format!("{}{path}", serving.url), &["--path-as-is"]);
        assert_eq!(got.status, status, "{path}");
        assert!(got.body.windows(secret.len()).all(|w| w != secret));
    }

    // A file that changed is read anew.
    let changed = data(2_500_000, 35);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(root.path().join("a.bin"), &changed).unwrap();
    let got = curl(&format!("{}a.bin", serving.url), &[]);
    assert!(got.body == changed);
}
