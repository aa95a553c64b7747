//! Random telemetry shaped like play: players start a session, enter a level, pick
//! things up (or buy them), die where the level's hard spots are, finish and move on,
//! or go idle. Pickups, purchases, deaths and level completions carry `event_data` as
//! a game would send it. Deterministic for a seed.

use event_model::snowplow;

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedEvent {
    pub event_id: String,
    pub client_id: String,
    pub event_type: &'static str,
    pub event_timestamp: i64,
    pub level_id: Option<String>,
    pub position: Option<(f64, f64)>,
    /// The game's own attributes of the event.
    pub event_data: Option<serde_json::Value>,
}

pub const APP_NAME: &str = "SampleGame";
pub const APP_VERSION: &str = "2.3.1";
/// The map size the positions live in (and the heat map draws).
pub const MAP_WIDTH: f64 = 1000.0;
pub const MAP_HEIGHT: f64 = 700.0;

struct Player {
    client_id: String,
    level: Option<usize>,
}

/// Plays `players` players on `levels` levels.
pub struct Simulator {
    rng: fastrand::Rng,
    /// Draws the `event_data` values apart from `rng`, so the play itself (who is where,
    /// doing what) is the same for a seed with or without them.
    data_rng: fastrand::Rng,
    players: Vec<Player>,
    levels: usize,
}

const ITEMS: [&str; 5] = ["coin", "health_potion", "key", "shield", "gem"];
const RARITIES: [&str; 3] = ["common", "rare", "epic"];
const SKUS: [(&str, f64); 4] = [
    ("sword-01", 4.99),
    ("skin-dragon", 9.99),
    ("coins-1000", 0.99),
    ("pass-season", 14.99),
];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const CAUSES: [&str; 4] = ["lava", "fall", "enemy", "trap"];
const WEAPONS: [&str; 3] = ["sword", "bow", "axe"];

fn uuid(rng: &mut fastrand::Rng) -> String {
    let mut bytes = rng.u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub fn level_name(level: usize) -> String {
    format!("level-{:02}", level + 1)
}

/// Where a level is deadly: three spots per level, fixed by the level number.
pub fn hotspots(level: usize) -> [(f64, f64); 3] {
    let mut rng = fastrand::Rng::with_seed(level as u64 * 7919 + 17);
    let mut spot = || {
        (
            rng.f64() * MAP_WIDTH * 0.8 + MAP_WIDTH * 0.1,
            rng.f64() * MAP_HEIGHT * 0.8 + MAP_HEIGHT * 0.1,
        )
    };
    [spot(), spot(), spot()]
}

impl Simulator {
    pub fn new(seed: u64, players: usize, levels: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let players = (0..players.max(1))
            .map(|_| Player {
                client_id: uuid(&mut rng),
                level: None,
            })
            .collect();
        Self {
            rng,
            data_rng: fastrand::Rng::with_seed(seed ^ 0xda7a),
            players,
            levels: levels.max(1),
        }
    }

    /// What a game sends with an event of `event_type`: a pickup's item (a tenth of
    /// pickups are purchases instead: SKU, price, currency), a death's cause and the
    /// weapon of an enemy, a completion's score and seconds.
    fn event_data(&mut self, event_type: &'static str) -> (&'static str, Option<serde_json::Value>) {
        let rng = &mut self.data_rng;
        let data = match event_type {
            "item_pickup" if rng.f64() < 0.1 => {
                let (sku, price) = SKUS[rng.usize(..SKUS.len())];
                let currency = CURRENCIES[rng.usize(..CURRENCIES.len())];
                return (
                    "purchase",
                    Some(serde_json::json!({"sku": sku, "price": price, "currency": currency})),
                );
            }
            "item_pickup" => serde_json::json!({
                "item": ITEMS[rng.usize(..ITEMS.len())],
                "rarity": RARITIES[[0, 0, 0, 1, 1, 2][rng.usize(..6)]],
            }),
            "player_death" => {
                let cause = CAUSES[rng.usize(..CAUSES.len())];
                let weapon = (cause == "enemy").then(|| WEAPONS[rng.usize(..WEAPONS.len())]);
                serde_json::json!({"cause": cause, "weapon": weapon})
            }
            "level_complete" => serde_json::json!({
                "score": rng.u32(100..5000),
                "seconds": f64::from(rng.u32(300..18_000)) / 10.0,
            }),
            _ => return (event_type, None),
        };
        (event_type, Some(data))
    }

    fn gaussian(&mut self) -> f64 {
        // Box–Muller.
        let (u, v) = (self.rng.f64().max(f64::MIN_POSITIVE), self.rng.f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn somewhere(&mut self) -> (f64, f64) {
        (self.rng.f64() * MAP_WIDTH, self.rng.f64() * MAP_HEIGHT)
    }

    fn death_spot(&mut self, level: usize) -> (f64, f64) {
        let (x, y) = hotspots(level)[self.rng.usize(..3)];
        let (dx, dy) = (self.gaussian() * 25.0, self.gaussian() * 25.0);
        ((x + dx).clamp(0.0, MAP_WIDTH), (y + dy).clamp(0.0, MAP_HEIGHT))
    }

    /// The next event of a random player, at `now_ms`.
    pub fn next_event(&mut self, now_ms: i64) -> GeneratedEvent {
        let index = self.rng.usize(..self.players.len());
        let event_id = uuid(&mut self.rng);
        let current = self.players[index].level;
        let (event_type, level, position) = match current {
            None => {
                let level = self.rng.usize(..self.levels);
                ("level_start", Some(level), None)
            }
            Some(level) => {
                let roll = self.rng.f64();
                if roll < 0.45 {
                    let spot = self.somewhere();
                    ("item_pickup", Some(level), Some(spot))
                } else if roll < 0.75 {
                    let spot = self.death_spot(level);
                    ("player_death", Some(level), Some(spot))
                } else if roll < 0.90 {
                    ("level_complete", Some(level), None)
                } else if roll < 0.95 {
                    // Finishing moves the player to the next level.
                    ("level_start", Some((level + 1) % self.levels), None)
                } else {
                    ("session_end", Some(level), None)
                }
            }
        };
        self.players[index].level = match event_type {
            "session_end" => None,
            _ => level,
        };
        let (event_type, event_data) = self.event_data(event_type);
        GeneratedEvent {
            event_id,
            client_id: self.players[index].client_id.clone(),
            event_type,
            event_timestamp: now_ms,
            level_id: level.map(level_name),
            position,
            event_data,
        }
    }
}

impl GeneratedEvent {
    /// The pipeline's telemetry JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut event = serde_json::json!({
            "event_id": self.event_id,
            "client_id": self.client_id,
            "app_name": APP_NAME,
            "app_version": APP_VERSION,
            "event_version": "1.0",
            "event_type": self.event_type,
            "event_timestamp": self.event_timestamp,
        });
        if let Some(level) = &self.level_id {
            event["level_id"] = level.clone().into();
        }
        if let Some((x, y)) = self.position {
            event["position_x"] = ((x * 100.0).round() / 100.0).into();
            event["position_y"] = ((y * 100.0).round() / 100.0).into();
        }
        if let Some(data) = &self.event_data {
            event["event_data"] = data.clone();
        }
        event.to_string().into_bytes()
    }

    /// A Snowplow enriched event with the level context the player-state worker reads.
    pub fn to_snowplow(&self) -> Vec<u8> {
        let mut fields = vec![String::new(); snowplow::FIELD_COUNT];
        let mut set = |name: &str, value: String| {
            if let Some(i) = snowplow::field_index(name) {
                fields[i] = value;
            }
        };
        let time = jiff::Timestamp::from_millisecond(self.event_timestamp)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .datetime()
            .strftime("%Y-%m-%d %H:%M:%S%.3f")
            .to_string();
        set("app_id", APP_NAME.into());
        set("platform", "pc".into());
        set("etl_tstamp", time.clone());
        set("collector_tstamp", time.clone());
        set("dvce_created_tstamp", time);
        set("event", "unstruct".into());
        set("event_id", self.event_id.clone());
        set("v_collector", "ssc-2.9.0-kinesis".into());
        set("v_etl", "snowplow-enrich-kinesis-3.9.0".into());
        set("user_id", self.client_id.clone());
        set("event_name", self.event_type.into());
        if let Some(level) = &self.level_id {
            let contexts = serde_json::json!({
                "schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
                "data": [{
                    "schema": "iglu:com.codecombat/level_context/jsonschema/1-0-0",
                    "data": {"user_id": self.client_id, "level_slug": level}
                }]
            });
            set("contexts", contexts.to_string());
        }
        fields.join("\t").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use event_model::{Event, Rules};

    use super::*;

    #[test]
    fn the_same_seed_plays_the_same_game() {
        let mut a = Simulator::new(42, 50, 5);
        let mut b = Simulator::new(42, 50, 5);
        for t in 0..500 {
            assert_eq!(a.next_event(t), b.next_event(t));
        }
        let mut c = Simulator::new(43, 50, 5);
        assert_ne!(a.next_event(0), c.next_event(0));
    }

    #[test]
    fn events_are_valid_and_deaths_cluster_on_hotspots() {
        let mut sim = Simulator::new(1, 100, 4);
        let mut near = 0;
        let mut deaths = 0;
        for t in 0..5_000 {
            let event = sim.next_event(1_767_225_600_000 + t);
            let json = event.to_json();
            Event::parse(&json, 1_767_225_600_000 + t, &Rules::default()).expect("valid telemetry");
            let snowplow = String::from_utf8(event.to_snowplow()).expect("utf8");
            let parsed = event_model::snowplow::to_json(&snowplow).expect("valid Snowplow");
            if event.level_id.is_some() {
                assert!(parsed.contains_key("contexts_com_codecombat_level_context_1"));
            }
            if event.event_type == "player_death" {
                deaths += 1;
                let level: usize = event
                    .level_id
                    .as_deref()
                    .and_then(|l| l[6..].parse::<usize>().ok())
                    .expect("level")
                    - 1;
                let (x, y) = event.position.expect("position");
                if hotspots(level)
                    .iter()
                    .any(|(hx, hy)| ((x - hx).powi(2) + (y - hy).powi(2)).sqrt() < 100.0)
                {
                    near += 1;
                }
            }
        }
        assert!(deaths > 500);
        assert!(near * 10 > deaths * 9, "{near} of {deaths} deaths near a hotspot");
    }

    #[test]
    fn events_carry_the_attributes_a_game_sends_with_them() {
        let mut sim = Simulator::new(3, 100, 4);
        let mut seen = std::collections::BTreeMap::<&str, usize>::new();
        for t in 0..5_000 {
            let event = sim.next_event(t);
            *seen.entry(event.event_type).or_default() += 1;
            let data = event.event_data.as_ref();
            let has = |key: &str| data.is_some_and(|d| d.get(key).is_some());
            match event.event_type {
                "purchase" => assert!(has("sku") && has("price") && has("currency"), "{data:?}"),
                "item_pickup" => assert!(has("item") && has("rarity"), "{data:?}"),
                "player_death" => assert!(has("cause") && has("weapon"), "{data:?}"),
                "level_complete" => assert!(has("score") && has("seconds"), "{data:?}"),
                _ => assert!(data.is_none()),
            }
        }
        assert!(
            seen["purchase"] > 50 && seen["purchase"] * 5 < seen["item_pickup"],
            "{seen:?}"
        );
    }
}
