//! `serve` on the local stack:
//! - in a real browser (Debian's headless Chromium through chromedriver), after a short
//!   game through the three services: the page's level counts equal LevelState, its
//!   flow picture draws the busiest moves, a heat map loads and changes with the level
//!   chosen, the health panel shows the warehouse's rows, and the page passes a basic
//!   accessibility check (every control labelled, text contrast at least 4.5:1); a
//!   screenshot is saved under the test's temporary directory;
//! - over plain HTTP with the warehouse unreachable and one table missing: those panels
//!   say down and why, the others answer; bad parameters are a 400 that names them;
//!   anything but GET is a 405; SIGTERM stops the server cleanly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use fantoccini::{Client, ClientBuilder, Locator};
use live_state::{level_state, player_state};
use pipeline_runtime::AwsClients;
use pipeline_tests::process::{HttpAnswer, ServiceProcess, http_request, run_command, workspace_binary};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;
use pipeline_tests::wait::eventually;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// chromedriver on a free loopback port, killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start(log: &Path) -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: this test needs Debian's chromium and chromium-driver \
                 (deploy/local/test installs them through deploy/local/up with LOCAL_STACK_BROWSER=1, \
                 or: apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let log = std::fs::File::create(log).expect("chromedriver log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A headless Chromium session with a profile of its own under `dir`.
    async fn browser(&self, dir: &Path) -> Client {
        let profile = dir.join("chromium-profile");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1700",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pipelinectl serve` on a free port; its address from its "live page serving" log.
fn serve(env: &[(&str, &str)]) -> (ServiceProcess, SocketAddr) {
    let mut env = env.to_vec();
    env.push(("SERVE_ADDRESS", "127.0.0.1:0"));
    let mut server = ServiceProcess::start_with_args(BIN, &["serve"], &env, None);
    let line = server
        .wait_for_line(Duration::from_secs(30), |l| l.contains("live page serving"))
        .expect("serve logs where it listens");
    let log: Value = serde_json::from_str(&line).expect("a JSON log line");
    let address = log["address"]
        .as_str()
        .expect("address field")
        .parse()
        .expect("address");
    (server, address)
}

fn get(address: SocketAddr, path: &str) -> HttpAnswer {
    http_request(address, "GET", path).unwrap_or_else(|| panic!("GET {path} answered"))
}

fn get_json(address: SocketAddr, path: &str) -> Value {
    let answer = get(address, path);
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    serde_json::from_slice(&answer.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", answer.text()))
}

/// Stops serve with SIGTERM, as ECS would, and asserts it exits 0 promptly.
fn stop(mut server: ServiceProcess) {
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "serve stops cleanly on SIGTERM: {status:?}"
    );
}

async fn level_counts(aws: &AwsClients, table: &str) -> BTreeMap<String, i64> {
    level_state::read_counts(&aws.dynamodb(), table)
        .await
        .expect("LevelState")
        .into_iter()
        .map(|l| (l.level_id, l.player_count))
        .collect()
}

/// Runs `script` in the page and returns its value.
async fn js(browser: &Client, script: &str) -> Value {
    browser
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// The levels table as the page shows it: level → count, from the rows' data attributes.
const DOM_COUNTS: &str = r#"
return Object.fromEntries([...document.querySelectorAll('#levels tbody tr[data-level]')]
  .map(row => [row.dataset.level, Number(row.dataset.count)]));
"#;

/// The heat map image: its URL and whether it finished loading a picture.
const HEATMAP_IMAGE: &str = r#"
const image = document.getElementById('heatmap');
return { src: image.getAttribute('src'), loaded: image.complete && image.naturalWidth > 0 && !image.hidden,
         width: image.naturalWidth, status: document.getElementById('heatmap-status').textContent };
"#;

/// A basic accessibility check: every form control has a label, and every visible text
/// has a contrast ratio of at least 4.5:1 (WCAG AA for body text) against the first
/// opaque background behind it. Returns what fails, one string each.
const ACCESSIBILITY: &str = r#"
const problems = [];
for (const control of document.querySelectorAll('input, select, textarea')) {
  const labelled = control.labels.length > 0 || control.getAttribute('aria-label') || control.getAttribute('aria-labelledby');
  if (!labelled) problems.push(`no label: ${control.outerHTML}`);
}
for (const image of document.querySelectorAll('img')) {
  if (!image.hasAttribute('alt')) problems.push(`no alt: ${image.outerHTML}`);
}
const rgba = (text) => {
  const m = text.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3]), m[4] === undefined ? 1 : Number(m[4])] : null;
};
const luminance = ([r, g, b]) => {
  const linear = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
};
const background = (node) => {
  for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
    if (n instanceof SVGElement && !(n instanceof SVGSVGElement)) continue;
    const colour = rgba(getComputedStyle(n).backgroundColor);
    if (colour && colour[3] >= 0.99) return colour;
  }
  return [255, 255, 255, 1];
};
let checked = 0;
for (const node of document.querySelectorAll('body *')) {
  if (['SCRIPT', 'STYLE', 'OPTION', 'DATALIST', 'TITLE', 'title'].includes(node.tagName)) continue;
  const ownText = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim() !== '');
  if (!ownText) continue;
  const box = node.getBoundingClientRect();
  const style = getComputedStyle(node);
  if (box.width <= 1 || box.height <= 1 || style.visibility === 'hidden' || style.display === 'none') continue;
  const ink = rgba(node instanceof SVGElement ? style.fill : style.color);
  if (!ink) { problems.push(`no colour: ${node.tagName}`); continue; }
  const [a, b] = [luminance(ink), luminance(background(node))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  checked += 1;
  if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)} < 4.5: ${node.tagName} "${node.textContent.trim().slice(0, 40)}"`);
}
return { problems, checked };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_in_a_real_browser_shows_levelstate_moves_heatmaps_and_health() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("live-page-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let schema = stack::warehouse_schema("live_page").await;

    // The three services that fill LevelState, Transitions, the lake and the warehouse.
    let mut env = resources.env();
    env.extend_from_slice(&[
        ("BATCH_MAX_AGE_SECS", "1"),
        ("BATCH_MAX_RECORDS", "200"),
        ("LOAD_MAX_AGE_SECS", "1"),
        ("LOAD_MAX_FILES", "5"),
        ("IDLE_BETWEEN_READS_MS", "200"),
        ("LEASE_FAILOVER_SECS", "3"),
        ("IDLE_TIMEOUT_SECS", "600"),
    ]);
    let mut services = Vec::new();
    for (name, url) in [
        ("s3-connector", None),
        ("redshift-connector", Some(schema.users.loader.as_str())),
        ("player-state-worker", None),
    ] {
        let mut env = env.clone();
        if let Some(url) = url {
            env.push(("WAREHOUSE_URL", url));
        }
        services.push(ServiceProcess::start(&workspace_binary(name), &env));
    }

    // A short game: 30 players on 3 levels, 900 events.
    let (code, text) = run_command(
        BIN,
        &env,
        &[
            "generate",
            "--players=30",
            "--levels=3",
            "--count=900",
            "--rate=300",
            "--seed=20",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    let sent: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("generate --json's summary");
    let distinct_valid = sent["distinct_valid"].as_i64().expect("distinct_valid");
    let (levels_table, players_table) = (
        resources.name("LEVEL_STATE_TABLE"),
        resources.name("PLAYER_STATE_TABLE"),
    );
    assert!(
        eventually(Duration::from_secs(90), || async {
            let levels = level_counts(&aws, levels_table).await;
            let recount = player_state::count_by_level(&aws.dynamodb(), players_table)
                .await
                .expect("PlayerState");
            levels.len() >= 2 && levels == recount
        })
        .await,
        "LevelState settles to the recount of PlayerState"
    );
    let rows = || async {
        schema
            .sql
            .query_one("SELECT COUNT(*) FROM events", &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    assert!(
        eventually(Duration::from_secs(90), || async { rows().await == distinct_valid }).await,
        "the warehouse holds the game's {distinct_valid} distinct events, not {}",
        rows().await
    );
    let game_done = started.elapsed();

    // The page, reading the warehouse as the reader, with sample-data's level pictures.
    let pictures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sample-data");
    let pictures = pictures.to_string_lossy().into_owned();
    let mut serve_env = resources.env();
    serve_env.extend_from_slice(&[
        ("WAREHOUSE_URL", schema.users.reader.as_str()),
        ("SERVE_LEVEL_PICTURES", pictures.as_str()),
    ]);
    let (server, address) = serve(&serve_env);
    let driver = Chromedriver::start(&dir.join("chromedriver.log"));
    let browser = driver.browser(&dir).await;
    let loading = Instant::now();
    browser
        .goto(&format!("http://{address}/"))
        .await
        .expect("load the page");
    let levels = level_counts(&aws, levels_table).await;
    let mut shown = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        shown = js(&browser, DOM_COUNTS).await;
        if serde_json::from_value::<BTreeMap<String, i64>>(shown.clone())
            .ok()
            .as_ref()
            == Some(&levels)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts_shown = loading.elapsed();
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, i64>>(shown.clone()).ok(),
        Some(levels.clone()),
        "the page's counts are LevelState's: {shown}"
    );
    let updated = browser
        .find(Locator::Id("levels-updated"))
        .await
        .expect("updated time")
        .text()
        .await
        .expect("text");
    assert!(
        updated.len() == 8 && updated.chars().filter(|c| *c == ':').count() == 2,
        "updated at HH:MM:SS: {updated:?}"
    );
    let navigation = js(
        &browser,
        "const n = performance.getEntriesByType('navigation')[0]; return n ? n.loadEventEnd - n.startTime : null;",
    )
    .await;

    // The heat map of the level chosen first, then of another.
    let image_loaded = |previous: Option<String>| {
        let browser = browser.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let image = js(&browser, HEATMAP_IMAGE).await;
                let src = image["src"].as_str().map(str::to_string);
                if image["loaded"] == true && src.is_some() && src != previous {
                    return image;
                }
                assert!(Instant::now() < deadline, "the heat map loads: {image}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let first = image_loaded(None).await;
    let first_src = first["src"].as_str().expect("src").to_string();
    let select = browser
        .find(Locator::Id("heatmap-level"))
        .await
        .expect("the level control");
    let chosen = select.prop("value").await.expect("value").expect("a level chosen");
    assert!(first_src.contains(&format!("level={chosen}")), "{first_src}");
    let other = levels.keys().find(|l| **l != chosen).expect("another level").clone();
    select.select_by_value(&other).await.expect("choose another level");
    let second = image_loaded(Some(first_src.clone())).await;
    let second_src = second["src"].as_str().expect("src").to_string();
    assert!(second_src.contains(&format!("level={other}")), "{second_src}");
    let (first_png, second_png) = (get(address, &first_src), get(address, &second_src));
    assert_eq!(
        (first_png.status, first_png.header("content-type")),
        (200, Some("image/png"))
    );
    assert_ne!(first_png.body, second_png.body, "another level, another picture");
    let second_picture = image::load_from_memory(&second_png.body).expect("a PNG");
    assert_eq!(
        u64::from(second_picture.width()),
        second["width"].as_u64().expect("width")
    );

    // The flow picture: a link per busiest move, its count on it, as summary reads them.
    let moves = pipelinectl::summary::read_top_transitions(
        &aws.dynamodb(),
        resources.name("TRANSITIONS_TABLE"),
        pipeline_runtime::clock::now_ms() - pipelinectl::summary::TRANSITIONS_WINDOW_MS,
        12,
    )
    .await
    .expect("Transitions");
    assert!(!moves.is_empty(), "the game moved players between levels");
    let expected_links: Vec<Value> = moves
        .iter()
        .map(|m| json!([m.from, m.to, m.count.to_string()]))
        .collect();
    let mut links = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        links = js(
            &browser,
            "return [...document.querySelectorAll('#flow path.link')].map(p => [p.dataset.from, p.dataset.to, p.dataset.count]);",
        )
        .await;
        if links.as_array() == Some(&expected_links) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(links.as_array(), Some(&expected_links), "the flow picture's links");
    let labels = js(
        &browser,
        "return [...document.querySelectorAll('#flow text.link-label')].map(t => t.textContent);",
    )
    .await;
    assert_eq!(
        labels.as_array().map(Vec::len),
        Some(moves.len()),
        "a count on every link"
    );

    // Health: both stores up, the warehouse's rows shown.
    let rows_text = format!("{distinct_valid} rows");
    let rows_text_grouped = if distinct_valid >= 1000 {
        format!("{},{:03} rows", distinct_valid / 1000, distinct_valid % 1000)
    } else {
        rows_text.clone()
    };
    let mut health = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        health = js(
            &browser,
            "return { lake: document.getElementById('lake-status').dataset.status,
                      warehouse: document.getElementById('warehouse-status').dataset.status,
                      rows: document.getElementById('health-rows').textContent,
                      age: document.getElementById('health-age').textContent };",
        )
        .await;
        if health["lake"] == "up"
            && health["warehouse"] == "up"
            && health["rows"]
                .as_str()
                .is_some_and(|r| r.starts_with(&rows_text_grouped))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        (&health["lake"], &health["warehouse"]),
        (&json!("up"), &json!("up")),
        "{health}"
    );
    assert!(
        health["rows"]
            .as_str()
            .is_some_and(|r| r.starts_with(&rows_text_grouped)),
        "{health}"
    );
    assert!(health["age"].as_str().is_some_and(|a| a.contains("ago")), "{health}");

    let accessibility = js(&browser, ACCESSIBILITY).await;
    assert_eq!(accessibility["problems"], json!([]), "accessibility: {accessibility}");
    assert!(
        accessibility["checked"].as_u64().is_some_and(|n| n >= 20),
        "{accessibility}"
    );

    let screenshot = browser.screenshot().await.expect("a screenshot");
    let shot = dir.join("live-page.png");
    std::fs::write(&shot, &screenshot).expect("save the screenshot");
    let picture = image::load_from_memory(&screenshot).expect("the screenshot is a PNG");
    assert!(picture.width() >= 1000, "{}", picture.width());
    browser.close().await.expect("end the session");
    drop(driver);
    eprintln!(
        "live page: game through the pipeline {} ms; page to LevelState's counts {} ms (navigation {navigation} ms); \
         whole test {} ms; screenshot {} ({} KiB, {}x{})",
        game_done.as_millis(),
        counts_shown.as_millis(),
        started.elapsed().as_millis(),
        shot.display(),
        screenshot.len() / 1024,
        picture.width(),
        picture.height()
    );
    let _ = std::fs::remove_dir_all(dir.join("chromium-profile"));

    stop(server);
    for mut service in services {
        service.terminate();
        assert!(service.wait_exit(Duration::from_secs(30)).is_some());
    }
    resources.delete(&aws).await;
    schema.drop_all().await;
}

#[tokio::test]
async fn live_page_shows_a_store_that_is_down_as_down_and_the_rest_working() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let levels_table = resources.name("LEVEL_STATE_TABLE");
    for (level, count) in [("level-a", "3"), ("level-b", "1")] {
        aws.dynamodb()
            .put_item()
            .table_name(levels_table)
            .item(level_state::LEVEL_ID, AttributeValue::S(level.into()))
            .item(level_state::PLAYER_COUNT, AttributeValue::N(count.into()))
            .send()
            .await
            .expect("put a level");
    }
    // Nothing listens on the warehouse's port; the transitions table does not exist.
    let dead_warehouse = format!(
        "postgres://pipeline_reader:pipeline_reader@127.0.0.1:{}/analytics",
        free_port()
    );
    let missing_table = stack::unique_name("no-such-table");
    let mut env = resources.env();
    env.retain(|(var, _)| *var != "TRANSITIONS_TABLE");
    env.extend_from_slice(&[
        ("WAREHOUSE_URL", dead_warehouse.as_str()),
        ("TRANSITIONS_TABLE", missing_table.as_str()),
        ("SERVE_STORE_TIMEOUT_MS", "3000"),
    ]);
    let (server, address) = serve(&env);

    let levels = get_json(address, "/api/levels");
    assert_eq!(levels["status"], "up", "{levels}");
    assert_eq!(
        levels["data"],
        json!([{"levelId": "level-a", "playerCount": 3}, {"levelId": "level-b", "playerCount": 1}])
    );
    let moves = get_json(address, "/api/transitions");
    assert_eq!(moves["status"], "down", "{moves}");
    assert!(moves["error"].as_str().is_some_and(|e| !e.is_empty()), "{moves}");
    let health = get_json(address, "/api/health");
    assert_eq!(health["lake"]["status"], "up", "{health}");
    assert_eq!(health["lake"]["data"]["rejected"], json!({}), "{health}");
    assert_eq!(health["warehouse"]["status"], "down", "{health}");
    assert!(
        health["warehouse"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{health}"
    );
    assert_eq!(health["rows_per_second"], Value::Null);

    let heatmap = get(address, "/heatmap.png?level=level-a&since=1h");
    assert_eq!(heatmap.status, 503, "{}", heatmap.text());
    assert!(heatmap.text().starts_with("warehouse down: "), "{}", heatmap.text());
    for (path, named) in [
        ("/heatmap.png", "level"),
        ("/heatmap.png?level=level-a&since=yesterday", "since"),
        ("/heatmap.png?level=level-a&since=now&until=2h", "since"),
    ] {
        let answer = get(address, path);
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
        assert!(answer.text().starts_with(named), "{path}: {}", answer.text());
    }

    let page = get(address, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    );
    for (path, kind) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
    ] {
        let answer = get(address, path);
        assert_eq!(
            (answer.status, answer.header("content-type")),
            (200, Some(kind)),
            "{path}"
        );
    }
    assert_eq!(get(address, "/nothing-here").status, 404);
    for (method, path) in [
        ("POST", "/api/levels"),
        ("PUT", "/heatmap.png?level=level-a"),
        ("DELETE", "/"),
        ("POST", "/anything"),
    ] {
        let answer = http_request(address, method, path).expect("an answer");
        assert_eq!(answer.status, 405, "{method} {path}: {}", answer.text());
    }
    stop(server);
    resources.delete(&aws).await;
}
