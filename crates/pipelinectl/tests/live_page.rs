//! `serve` on the local stack:
//! - in a real browser (Debian's headless Chromium through chromedriver), after a short
//!   game through the three services: the page's level counts equal LevelState and
//!   follow it when it changes, its flow picture draws the busiest moves, a heat map
//!   loads and counts the warehouse's events of the level chosen (and of another when
//!   another is chosen), the health panel shows the warehouse's rows, and the page passes a basic
//!   accessibility check (every control labelled, text contrast at least 4.5:1); a
//!   screenshot is saved under the test's temporary directory;
//! - over plain HTTP with a warehouse that accepts connections and never answers and one
//!   table missing: those panels say down within the store timeout and why, the others
//!   answer; bad parameters are a 400 that names them; anything but GET is a 405; a
//!   Host the server does not know is a 421 and another site's request a 403; SIGTERM
//!   stops the server cleanly;
//! - warehouse settings that contradict each other, or a malformed WAREHOUSE_URL, stop
//!   the start naming the variable.

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
use pipelinectl::generate::workload::{MAP_HEIGHT, MAP_WIDTH};
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

/// The heat map image: the URL it was fetched from, the events it counts, and whether
/// it finished loading a picture.
const HEATMAP_IMAGE: &str = r#"
const image = document.getElementById('heatmap');
return { url: image.dataset.url ?? null, events: image.dataset.events ?? null, alt: image.alt,
         loaded: image.complete && image.naturalWidth > 0 && !image.hidden,
         width: image.naturalWidth, status: document.getElementById('heatmap-status').textContent };
"#;

/// The levels table's time of reading (ms) and its "updated at" text.
const LEVELS_UPDATED: &str = r#"
return { at: Number(document.getElementById('levels').dataset.updatedAt),
         text: document.getElementById('levels-updated').textContent };
"#;

/// Waits up to `within` for the page's level counts to equal `expected`; what it showed last.
async fn page_counts(browser: &Client, expected: &BTreeMap<String, i64>, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let shown = js(browser, DOM_COUNTS).await;
        let same = serde_json::from_value::<BTreeMap<String, i64>>(shown.clone())
            .ok()
            .as_ref()
            == Some(expected);
        if same || Instant::now() >= deadline {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds `by` to a level's count in LevelState, directly.
async fn add_players(aws: &AwsClients, table: &str, level: &str, by: i64) {
    aws.dynamodb()
        .update_item()
        .table_name(table)
        .key(level_state::LEVEL_ID, AttributeValue::S(level.into()))
        .update_expression("ADD #count :by")
        .expression_attribute_names("#count", level_state::PLAYER_COUNT)
        .expression_attribute_values(":by", AttributeValue::N(by.to_string()))
        .send()
        .await
        .expect("update a level's count");
}

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
    let shown = page_counts(&browser, &levels, Duration::from_secs(30)).await;
    let counts_shown = loading.elapsed();
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, i64>>(shown.clone()).ok(),
        Some(levels.clone()),
        "the page's counts are LevelState's: {shown}"
    );
    let before = js(&browser, LEVELS_UPDATED).await;
    let updated = before["text"].as_str().unwrap_or_default().to_string();
    assert!(
        updated.len() == 8 && updated.chars().filter(|c| *c == ':').count() == 2,
        "updated at HH:MM:SS: {updated:?}"
    );
    // The page keeps reading: LevelState changed behind its back shows within ~3 s,
    // with a later "updated at" (a second on, so the HH:MM:SS text moves too).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (busiest, _) = levels.iter().max_by_key(|(_, n)| **n).expect("a level");
    let busiest = busiest.clone();
    add_players(&aws, levels_table, &busiest, 7).await;
    let mut changed = levels.clone();
    *changed.entry(busiest.clone()).or_insert(0) += 7;
    let changing = Instant::now();
    let followed = page_counts(&browser, &changed, Duration::from_secs(10)).await;
    let follow_time = changing.elapsed();
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, i64>>(followed.clone()).ok(),
        Some(changed),
        "the page follows LevelState within 10 s: {followed}"
    );
    let after = js(&browser, LEVELS_UPDATED).await;
    assert!(
        after["at"].as_i64() > before["at"].as_i64() && after["text"] != before["text"],
        "the updated-at time moves: {before} then {after}"
    );
    add_players(&aws, levels_table, &busiest, -7).await;
    let restored = page_counts(&browser, &levels, Duration::from_secs(10)).await;
    assert_eq!(
        serde_json::from_value::<BTreeMap<String, i64>>(restored.clone()).ok(),
        Some(levels.clone()),
        "and back: {restored}"
    );
    let navigation = js(
        &browser,
        "const n = performance.getEntriesByType('navigation')[0]; return n ? n.loadEventEnd - n.startTime : null;",
    )
    .await;

    // The heat map of the level chosen first, then of another: each counts the
    // warehouse's deaths on its level (the game's are all within the last hour).
    let deaths_on = |level: String| {
        let sql = &schema.sql;
        async move {
            let count = format!(
                "SELECT COUNT(*) FROM events WHERE level_id = $1 AND event_type = 'player_death' \
                 AND position_x >= 0 AND position_x < {MAP_WIDTH:?} AND position_y >= 0 AND position_y < {MAP_HEIGHT:?}"
            );
            let n: i64 = sql.query_one(&count, &[&level]).await.expect("count").get(0);
            n
        }
    };
    let image_loaded = |previous: Option<String>| {
        let browser = browser.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let image = js(&browser, HEATMAP_IMAGE).await;
                let url = image["url"].as_str().map(str::to_string);
                if image["loaded"] == true && url.is_some() && url != previous {
                    return image;
                }
                assert!(Instant::now() < deadline, "the heat map loads: {image}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let first = image_loaded(None).await;
    let first_url = first["url"].as_str().expect("url").to_string();
    let select = browser
        .find(Locator::Id("heatmap-level"))
        .await
        .expect("the level control");
    let chosen = select.prop("value").await.expect("value").expect("a level chosen");
    assert!(first_url.contains(&format!("level={chosen}")), "{first_url}");
    let other = levels.keys().find(|l| **l != chosen).expect("another level").clone();
    select.select_by_value(&other).await.expect("choose another level");
    let second = image_loaded(Some(first_url.clone())).await;
    let second_url = second["url"].as_str().expect("url").to_string();
    assert!(second_url.contains(&format!("level={other}")), "{second_url}");
    let (first_deaths, second_deaths) = (deaths_on(chosen.clone()).await, deaths_on(other.clone()).await);
    for (image, level, deaths) in [(&first, &chosen, first_deaths), (&second, &other, second_deaths)] {
        assert_eq!(
            image["events"].as_str(),
            Some(deaths.to_string().as_str()),
            "the page's heat map of {level} counts the warehouse's {deaths} deaths there: {image}"
        );
        assert!(
            image["alt"]
                .as_str()
                .is_some_and(|a| a.contains(&format!("{level}, last hour: {deaths} events"))),
            "{image}"
        );
    }
    assert!(first_deaths + second_deaths > 0, "the game had deaths on its levels");
    let (first_png, second_png) = (get(address, &first_url), get(address, &second_url));
    assert_eq!(
        (first_png.status, first_png.header("content-type")),
        (200, Some("image/png"))
    );
    let header_events = |answer: &HttpAnswer| answer.header("x-heatmap-events").and_then(|n| n.parse::<i64>().ok());
    assert_eq!(
        (header_events(&first_png), header_events(&second_png)),
        (Some(first_deaths), Some(second_deaths))
    );
    if first_deaths != second_deaths {
        assert_ne!(
            header_events(&first_png),
            header_events(&second_png),
            "another level, another count"
        );
    }
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
        "live page: game through the pipeline {} ms; page to LevelState's counts {} ms (navigation {navigation} ms), \
         to a change of them {} ms; whole test {} ms; screenshot {} ({} KiB, {}x{})",
        game_done.as_millis(),
        counts_shown.as_millis(),
        follow_time.as_millis(),
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
    // The warehouse's port takes connections and never answers (the timeout path, not a
    // refusal); the transitions table does not exist.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a silent listener");
    let silent_port = silent.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let dead_warehouse = format!("postgres://pipeline_reader:pipeline_reader@127.0.0.1:{silent_port}/analytics");
    let missing_table = stack::unique_name("no-such-table");
    let mut env = resources.env();
    env.retain(|(var, _)| *var != "TRANSITIONS_TABLE");
    env.extend_from_slice(&[
        ("WAREHOUSE_URL", dead_warehouse.as_str()),
        ("WAREHOUSE_TLS", "disable"),
        ("TRANSITIONS_TABLE", missing_table.as_str()),
        ("SERVE_STORE_TIMEOUT_MS", "3000"),
        ("SERVE_ALLOWED_HOSTS", "live.example.com"),
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
    for _ in 0..2 {
        let asked = Instant::now();
        let health = get_json(address, "/api/health");
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(5000),
            "health answers within the timeout: {took:?}"
        );
        assert_eq!(health["lake"]["status"], "up", "{health}");
        assert_eq!(health["lake"]["data"]["rejected"], json!({}), "{health}");
        assert_eq!(health["warehouse"]["status"], "down", "{health}");
        assert!(
            health["warehouse"]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no answer within 3000 ms")),
            "{health}"
        );
        assert_eq!(health["landed"]["loaded"], Value::Null, "{health}");
        // The lake's reading is reused for 10 s, the warehouse's for 2 s: wait it out.
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }

    let asked = Instant::now();
    let heatmap = get(address, "/heatmap.png?level=level-a&since=1h");
    let took = asked.elapsed();
    assert_eq!(heatmap.status, 503, "{}", heatmap.text());
    assert!(heatmap.text().starts_with("warehouse down: "), "{}", heatmap.text());
    assert!(
        took < Duration::from_millis(5000),
        "the heat map gives up within the timeout: {took:?}"
    );
    for (path, named) in [
        ("/heatmap.png", "level"),
        ("/heatmap.png?level=level-a&since=yesterday", "since"),
        ("/heatmap.png?level=level-a&since=now&until=2h", "since"),
        ("/heatmap.png?level=level-a&since=36500d", "since: at most 31 days"),
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
        Some("default-src 'self'; img-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    );
    assert_eq!(page.header("cross-origin-resource-policy"), Some("same-origin"));
    // DNS rebinding: the page asked for under another name is refused, as is what
    // another site's page asks for; the proxy's name listed is answered.
    let rebound = request_with(address, "/api/levels", &[("Host", "rebound.attacker.example:8080")]);
    assert_eq!(rebound.status, 421, "{}", rebound.text());
    assert!(rebound.text().contains("SERVE_ALLOWED_HOSTS"), "{}", rebound.text());
    let embedded = request_with(
        address,
        "/heatmap.png?level=level-a",
        &[
            ("Host", &address.to_string()),
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "no-cors"),
        ],
    );
    assert_eq!(embedded.status, 403, "{}", embedded.text());
    assert_eq!(embedded.header("cross-origin-resource-policy"), Some("same-origin"));
    let localhost = format!("localhost:{}", address.port());
    for host in ["live.example.com", localhost.as_str()] {
        assert_eq!(
            request_with(address, "/api/levels", &[("Host", host)]).status,
            200,
            "{host}"
        );
    }
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

    // Settings that cannot work stop the start, naming the variable.
    for (settings, named) in [
        (
            vec![
                ("WAREHOUSE_BACKEND", "redshift-data"),
                ("REDSHIFT_CLUSTER_ID", "analytics"),
                ("REDSHIFT_WORKGROUP", "analytics"),
            ],
            "REDSHIFT_CLUSTER_ID",
        ),
        (
            vec![("WAREHOUSE_URL", "postgres://reader@127.0.0.1:notaport/analytics")],
            "WAREHOUSE_URL",
        ),
    ] {
        let mut env = resources.env();
        env.push(("SERVE_ADDRESS", "127.0.0.1:0"));
        env.extend_from_slice(&settings);
        let (code, text) = run_command(BIN, &env, &["serve"]);
        assert_eq!(code, Some(1), "{settings:?}: {text}");
        assert!(text.contains(named), "{settings:?} names {named}: {text}");
    }
    resources.delete(&aws).await;
}

/// GET `path` with these headers (and no others), over plain HTTP/1.1.
fn request_with(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("answer");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head and a body");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    HttpAnswer {
        status,
        headers: lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_string()))
            .collect(),
        body: response[split + 4..].to_vec(),
    }
}
