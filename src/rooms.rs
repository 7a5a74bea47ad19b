//! The registry of mediation rooms, read once at start from a TOML file (the shipped
//! `deploy/rooms.toml` unless `TIAOJIE_ROOMS` names another).
//!
//! Invariants: room ids are unique and valid [`RoomId`]s; `kind` is `first_batch`, `hub` or
//! `domain`; a malformed file stops the server with a message that names the line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tiaojie_domain::RoomId;
use toml::Spanned;

/// The registry shipped with the project.
pub const DEFAULT_ROOMS: &str = include_str!("../deploy/rooms.toml");

/// What kind of display point hosts the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// One of the ten display points opened in 2021.
    FirstBatch,
    /// A hub-type (枢纽型) display point of 2022.
    Hub,
    /// A domain (领域) display point of 2022, paired with a "20+8" cluster.
    Domain,
}

/// A mediation room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Room {
    /// The room's id, e.g. `R01`.
    pub room_id: String,
    /// Its Chinese name.
    pub name: String,
    /// The kind of display point.
    pub kind: RoomKind,
    /// The "20+8" industry cluster, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    room: Vec<Spanned<RawRoom>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoom {
    id: Spanned<String>,
    name: String,
    kind: RoomKind,
    cluster: Option<String>,
}

/// The rooms, by id.
#[derive(Debug, Clone)]
pub struct Rooms {
    by_id: BTreeMap<String, Room>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Rooms {
    /// Parses a registry. `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Rooms, String> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            format!("{origin}: line {line}: {}", e.message())
        })?;
        let mut by_id = BTreeMap::new();
        for spanned in file.room {
            let line = line_of(text, spanned.span().start);
            let raw = spanned.into_inner();
            let id_line = line_of(text, raw.id.span().start);
            let id = raw.id.into_inner();
            RoomId::new(&id)
                .map_err(|e| format!("{origin}: line {id_line}: room id {id:?} {e}"))?;
            if raw.name.trim().is_empty() {
                return Err(format!(
                    "{origin}: line {line}: room {id} has an empty name"
                ));
            }
            let room = Room {
                room_id: id.clone(),
                name: raw.name,
                kind: raw.kind,
                cluster: raw.cluster.filter(|c| !c.trim().is_empty()),
            };
            if by_id.insert(id.clone(), room).is_some() {
                return Err(format!(
                    "{origin}: line {id_line}: room id {id} appears twice"
                ));
            }
        }
        if by_id.is_empty() {
            return Err(format!("{origin}: no [[room]] entries"));
        }
        Ok(Rooms { by_id })
    }

    /// Reads the registry at `path`, or the shipped one.
    pub fn load(path: Option<&std::path::Path>) -> Result<Rooms, String> {
        match path {
            None => Rooms::parse(DEFAULT_ROOMS, "deploy/rooms.toml (built in)"),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read rooms registry {}: {e}", path.display()))?;
                Rooms::parse(&text, &path.display().to_string())
            }
        }
    }

    /// A room by id.
    pub fn get(&self, id: &str) -> Option<&Room> {
        self.by_id.get(id)
    }

    /// Every room, ordered by id.
    pub fn all(&self) -> impl Iterator<Item = &Room> {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_registry_has_ten_rooms_of_each_kind() {
        let rooms = Rooms::load(None).unwrap();
        assert_eq!(rooms.all().count(), 30);
        for kind in [RoomKind::FirstBatch, RoomKind::Hub, RoomKind::Domain] {
            assert_eq!(
                rooms.all().filter(|r| r.kind == kind).count(),
                10,
                "{kind:?}"
            );
        }
        assert_eq!(rooms.get("R01").unwrap().room_id, "R01");
        assert!(rooms.get("R30").is_some());
        assert!(rooms
            .all()
            .any(|r| r.name.contains("深圳市社会组织总会") && r.kind == RoomKind::Hub));
    }

    #[test]
    fn a_malformed_registry_names_the_line() {
        let text = "[[room]]\nid = \"R01\"\nname = \"甲\"\nkind = \"first_batch\"\n\n[[room]]\nid = \"R02\"\nname = \"乙\"\nkind = \"castle\"\n";
        let err = Rooms::parse(text, "rooms.toml").unwrap_err();
        assert!(err.contains("line 9"), "{err}");
        let dup = "[[room]]\nid = \"R01\"\nname = \"甲\"\nkind = \"hub\"\n[[room]]\nid = \"R01\"\nname = \"乙\"\nkind = \"hub\"\n";
        let err = Rooms::parse(dup, "rooms.toml").unwrap_err();
        assert!(err.contains("line 6") && err.contains("twice"), "{err}");
    }
}
