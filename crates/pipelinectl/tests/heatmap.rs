//! `heatmap` on the local PostgreSQL warehouse: known points give known cells, only
//! the asked level, type and time range count, a hostile level name is only ever a
//! value, and the PNG decodes at the size the layout promises.

use std::process::Command;

use pipeline_tests::stack;

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");
const LEVEL: &str = "O'Brien's \"keep\"; DROP TABLE events; --";

fn heatmap(url: &str, args: &[&str]) -> (String, String) {
    let output = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(stack::service_env())
        .env("WAREHOUSE_URL", url)
        .args(["heatmap", "--log-format=text", "--level", LEVEL])
        .args([
            "--since=2026-01-01T00:00:00Z",
            "--until=2026-01-01T01:00:00Z",
            "--grid=4x2",
            "--map-width=100",
            "--map-height=50",
        ])
        .args(args)
        .output()
        .expect("run pipelinectl");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    (String::from_utf8_lossy(&output.stdout).to_string(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_points_make_known_cells_in_csv_and_png() {
    let schema = stack::warehouse_schema("heatmap").await;
    let mut rows = Vec::new();
    let mut add = |level: &str, event_type: &str, time: &str, x: Option<f64>, y: Option<f64>| {
        rows.push(format!(
            "('SampleGame', '1', '1.0', '{id}', '{event_type}', TIMESTAMP '{time}', TIMESTAMP '{time}', '{id}', '{level}', {x}, {y})",
            id = uuid::Uuid::new_v4(),
            level = level.replace('\'', "''"),
            x = x.map_or("NULL".into(), |v| v.to_string()),
            y = y.map_or("NULL".into(), |v| v.to_string()),
        ));
    };
    for _ in 0..3 {
        add(LEVEL, "player_death", "2026-01-01 00:10:00", Some(10.0), Some(10.0));
    }
    add(LEVEL, "player_death", "2026-01-01 00:00:00", Some(60.0), Some(40.0)); // at since: in
    add(LEVEL, "player_death", "2026-01-01 00:59:59.999", Some(60.0), Some(40.0));
    add(LEVEL, "player_death", "2026-01-01 00:20:00", Some(100.0), Some(50.0)); // corner: last cell
    add(LEVEL, "player_death", "2026-01-01 00:20:00", Some(99.9), Some(0.0));
    // None of these count.
    add(LEVEL, "player_death", "2026-01-01 01:00:00", Some(10.0), Some(10.0)); // at until
    add(LEVEL, "player_death", "2025-12-31 23:59:59", Some(10.0), Some(10.0));
    add(LEVEL, "item_pickup", "2026-01-01 00:10:00", Some(10.0), Some(10.0));
    add(
        "level-01",
        "player_death",
        "2026-01-01 00:10:00",
        Some(10.0),
        Some(10.0),
    );
    add(LEVEL, "player_death", "2026-01-01 00:10:00", None, None);
    schema
        .sql
        .batch_execute(&format!("INSERT INTO events VALUES {}", rows.join(", ")))
        .await
        .expect("insert");

    let (csv, stderr) = heatmap(&schema.users.reader, &["--format=csv", "--output=-"]);
    assert!(stderr.contains("7 events, 3 in the busiest cell"), "{stderr}");
    let cells: Vec<(u32, u32, u64)> = csv
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (
                f[0].parse().expect("column"),
                f[1].parse().expect("row"),
                f[6].parse().expect("count"),
            )
        })
        .collect();
    assert_eq!(cells.len(), 8);
    let count = |c: u32, r: u32| cells.iter().find(|x| x.0 == c && x.1 == r).map(|x| x.2);
    assert_eq!(count(0, 0), Some(3));
    assert_eq!(count(2, 1), Some(2));
    assert_eq!(count(3, 1), Some(1));
    assert_eq!(count(3, 0), Some(1));
    assert_eq!(cells.iter().map(|x| x.2).sum::<u64>(), 7);

    let dir = std::env::temp_dir().join(format!("heatmap-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let map = dir.join("map.png");
    let picture = image::RgbImage::from_pixel(64, 32, image::Rgb([10, 200, 10]));
    picture.save(&map).expect("map");
    let png = dir.join("heat.png");
    heatmap(
        &schema.users.reader,
        &[
            "--image-width=400",
            &format!("--background={}", map.display()),
            &format!("--output={}", png.display()),
        ],
    );
    let drawn = image::open(&png).expect("the PNG decodes").to_rgb8();
    // The map area is 400 × 200 (the level's 2:1), plus title, scale and caption.
    assert!(drawn.width() >= 400 + 24, "{}", drawn.width());
    assert_eq!(drawn.height(), 200 + 16 + 24 + 24 + 16);
    // An empty cell shows the background through.
    assert_eq!(*drawn.get_pixel(12 + 150, 40 + 20), image::Rgb([10, 200, 10]));

    let tables: i64 = schema
        .sql
        .query_one("SELECT COUNT(*) FROM events", &[])
        .await
        .expect("events survive")
        .get(0);
    assert_eq!(tables, 12);
    schema.drop_all().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heatmap_where_on_event_data_counts_only_the_matching_events_the_value_bound() {
    let schema = stack::warehouse_schema("heatmap_where").await;
    let mut rows = Vec::new();
    for (x, data) in [
        (10.0, r#"{"cause": "lava"}"#),
        (10.0, r#"{"cause": "lava", "weapon": {"kind": "axe"}}"#),
        (60.0, r#"{"cause": "fall"}"#),
        (60.0, r#"{"cause": "O'Brien's; DROP TABLE events; --"}"#),
        (60.0, "null"),
    ] {
        rows.push(format!(
            "('SampleGame', '1', '1.0', '{id}', 'player_death', TIMESTAMP '2026-01-01 00:10:00', TIMESTAMP '2026-01-01 00:10:00', '{id}', '{level}', {x}, 10, '{data}')",
            id = uuid::Uuid::new_v4(),
            level = LEVEL.replace('\'', "''"),
            data = data.replace('\'', "''"),
        ));
    }
    schema
        .sql
        .batch_execute(&format!("INSERT INTO events VALUES {}", rows.join(", ")))
        .await
        .expect("insert");
    let events = |filters: &[&str]| {
        let args: Vec<String> = ["--format=csv".to_string(), "--output=-".to_string()]
            .into_iter()
            .chain(filters.iter().map(|f| format!("--where={f}")))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, stderr) = heatmap(&schema.users.reader, &args);
        stderr
    };
    assert!(events(&["cause=lava"]).contains(": 2 events, 2 in the busiest cell"));
    assert!(events(&["cause=lava", "weapon.kind=axe"]).contains(": 1 events,"));
    assert!(events(&["cause=O'Brien's; DROP TABLE events; --"]).contains(": 1 events,"));
    assert!(events(&["cause=nothing"]).contains(": 0 events,"));
    assert!(events(&[]).contains(": 5 events,"), "the table is intact");
    schema.drop_all().await;
}
