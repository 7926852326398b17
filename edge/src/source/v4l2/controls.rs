//! Camera controls (`[source.options]`): exposure, white balance, gain, focus, and any other
//! V4L2 control by name. No device code here: what the configuration asks for
//! ([`wanted`]), whether it makes sense ([`validate`], at config load), and how it maps onto the
//! controls a camera offers ([`resolve`]) are plain functions, tested without a camera; the
//! capture thread (`device.rs`) sets the result at open **and after every reconnect** (a UVC
//! camera that is unplugged forgets its settings).
//!
//! # Why white balance is locked
//!
//! Colour cast is the model's known weakness (README, "Augmentation"), and a UVC camera's
//! automatic white balance changes it from frame to frame as the field changes. The example
//! configuration therefore sets `white_balance_auto = false` with a fixed
//! `white_balance_temperature`, and a manual exposure.
//!
//! # Order and errors
//!
//! Automatic modes are set first (`exposure_auto`, `white_balance_auto`, `focus_auto`), so that a
//! manual value that follows is not refused as inactive; then `exposure_absolute`,
//! `white_balance_temperature`, `gain`, `focus_absolute`; then `controls` in name order. A
//! control the camera does not offer, a value outside its range or a menu entry it lacks, and a
//! value the driver refuses are **errors naming the control**: the camera does not open (`edge
//! run` refuses to start, `edge check` fails), and after a reconnect the camera counts as not back
//! yet and is retried — screening with an unlocked white balance is what this avoids.

use serde::{Deserialize, Serialize};

use crate::source::SourceOptions;

/// V4L2 control ids of the named keys (`linux/v4l2-controls.h`).
pub mod ids {
    /// `V4L2_CID_EXPOSURE_AUTO` (menu: 0 auto, 1 manual, 2 shutter priority, 3 aperture
    /// priority).
    pub const EXPOSURE_AUTO: u32 = 0x009a_0901;
    /// `V4L2_CID_EXPOSURE_ABSOLUTE` (100 µs units).
    pub const EXPOSURE_ABSOLUTE: u32 = 0x009a_0902;
    /// `V4L2_CID_AUTO_WHITE_BALANCE`.
    pub const WHITE_BALANCE_AUTO: u32 = 0x0098_090c;
    /// `V4L2_CID_WHITE_BALANCE_TEMPERATURE` (kelvin).
    pub const WHITE_BALANCE_TEMPERATURE: u32 = 0x0098_091a;
    /// `V4L2_CID_GAIN`.
    pub const GAIN: u32 = 0x0098_0913;
    /// `V4L2_CID_FOCUS_AUTO`.
    pub const FOCUS_AUTO: u32 = 0x009a_090c;
    /// `V4L2_CID_FOCUS_ABSOLUTE`.
    pub const FOCUS_ABSOLUTE: u32 = 0x009a_090a;
}

/// `exposure_auto`: a switch, or one of the V4L2 exposure modes by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExposureSetting {
    /// `true`: the camera's automatic exposure (`auto`, or `aperture_priority`, which is what
    /// UVC cameras call it); `false`: `manual`.
    Switch(bool),
    /// `"auto"`, `"manual"`, `"shutter_priority"` or `"aperture_priority"`.
    Mode(String),
}

/// The V4L2 exposure modes (`enum v4l2_exposure_auto_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExposureMode {
    /// Automatic exposure time and iris (`true`: also accepts aperture priority).
    Auto,
    /// Manual exposure time and iris.
    Manual,
    /// Manual exposure time, automatic iris.
    ShutterPriority,
    /// Automatic exposure time, manual iris (UVC cameras' "auto").
    AperturePriority,
}

impl ExposureSetting {
    /// The mode, or why the name is not one.
    pub fn mode(&self) -> Result<ExposureMode, String> {
        match self {
            ExposureSetting::Switch(true) => Ok(ExposureMode::Auto),
            ExposureSetting::Switch(false) => Ok(ExposureMode::Manual),
            ExposureSetting::Mode(name) => match name.as_str() {
                "auto" => Ok(ExposureMode::Auto),
                "manual" => Ok(ExposureMode::Manual),
                "shutter_priority" => Ok(ExposureMode::ShutterPriority),
                "aperture_priority" => Ok(ExposureMode::AperturePriority),
                other => Err(format!(
                    "source.options.exposure_auto: {other:?} is not a mode (true, false, \"auto\", \
                     \"manual\", \"shutter_priority\" or \"aperture_priority\")"
                )),
            },
        }
    }
}

impl ExposureMode {
    /// The menu indices that give this mode, in order of preference.
    fn menu_indices(self) -> &'static [i64] {
        match self {
            ExposureMode::Auto => &[0, 3],
            ExposureMode::Manual => &[1],
            ExposureMode::ShutterPriority => &[2],
            ExposureMode::AperturePriority => &[3],
        }
    }

    /// Whether `exposure_absolute` can be set in this mode.
    fn manual_time(self) -> bool {
        matches!(self, ExposureMode::Manual | ExposureMode::ShutterPriority)
    }
}

/// The value of a control in `controls = { name = value }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ControlValue {
    /// A switch (boolean controls; 0/1 for integer ones).
    Bool(bool),
    /// A number (integer controls, a menu's index).
    Int(i64),
    /// A menu entry by its name, e.g. `"50 Hz"` (compared like control names).
    Name(String),
}

impl std::fmt::Display for ControlValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlValue::Bool(b) => write!(f, "{b}"),
            ControlValue::Int(i) => write!(f, "{i}"),
            ControlValue::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// Which control a wanted setting is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A standard control: its id, and the names a driver may give it instead.
    Id(u32, &'static [&'static str]),
    /// Any control, by its `v4l2-ctl` name ([`control_name`]).
    Name(String),
}

/// What a wanted setting asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// A value for a boolean, integer or menu control.
    Value(ControlValue),
    /// An exposure mode (a menu with one of these indices).
    Exposure(ExposureMode),
}

/// One control to set, as the configuration asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedControl {
    /// The configuration key, as errors name it (`white_balance_temperature`,
    /// `controls.brightness`).
    pub key: String,
    /// The control.
    pub target: Target,
    /// The value.
    pub value: Wanted,
}

/// What a camera offers of one control (`VIDIOC_QUERY_EXT_CTRL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedControl {
    /// Its id.
    pub id: u32,
    /// Its `v4l2-ctl` name ([`control_name`] of the driver's description).
    pub name: String,
    /// Its type.
    pub kind: ControlKind,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Menu entries (index, `v4l2-ctl`-style name) of a menu control.
    pub menu: Vec<(i64, String)>,
}

/// The control types that can be set from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// An integer (32 or 64 bit).
    Integer,
    /// A switch.
    Boolean,
    /// A menu of named entries, or of numbers.
    Menu,
    /// Anything else (buttons, strings, compound controls): not settable here.
    Other,
}

/// A resolved setting: what the capture thread sets, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The configuration key.
    pub key: String,
    /// The control id.
    pub id: u32,
    /// The value (0/1 for a switch).
    pub value: i64,
    /// A boolean control (set as a boolean).
    pub boolean: bool,
}

/// The names the named keys take, so `controls` cannot set one of them a second time.
const NAMED: &[(&str, u32, &[&str])] = &[
    ("exposure_auto", ids::EXPOSURE_AUTO, &["auto_exposure"]),
    (
        "white_balance_auto",
        ids::WHITE_BALANCE_AUTO,
        &["white_balance_temperature_auto", "white_balance_automatic"],
    ),
    (
        "focus_auto",
        ids::FOCUS_AUTO,
        &["focus_automatic_continuous"],
    ),
    (
        "exposure_absolute",
        ids::EXPOSURE_ABSOLUTE,
        &["exposure_time_absolute"],
    ),
    (
        "white_balance_temperature",
        ids::WHITE_BALANCE_TEMPERATURE,
        &[],
    ),
    ("gain", ids::GAIN, &[]),
    ("focus_absolute", ids::FOCUS_ABSOLUTE, &[]),
];

/// The `v4l2-ctl` name of a control from the driver's description: lower case, every run of
/// characters other than letters and digits one `_`, none at the ends (`"White Balance
/// Temperature, Auto"` → `white_balance_temperature_auto`).
pub fn control_name(description: &str) -> String {
    let mut out = String::new();
    for c in description.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// The controls `opts` asks for, in the order they are set (see the module documentation).
/// Nothing configured: empty, and the camera keeps its own settings.
pub fn wanted(opts: &SourceOptions) -> Vec<WantedControl> {
    let mut out = Vec::new();
    let named = |key: &str| -> Target {
        let (_, id, aliases) = NAMED.iter().find(|(k, ..)| *k == key).expect("a named key");
        Target::Id(*id, aliases)
    };
    let mut push = |key: &str, value: Wanted| {
        out.push(WantedControl {
            key: key.to_string(),
            target: named(key),
            value,
        })
    };
    if let Some(e) = &opts.exposure_auto {
        // An invalid name is refused by `validate` at config load; here it is left out.
        if let Ok(mode) = e.mode() {
            push("exposure_auto", Wanted::Exposure(mode));
        }
    }
    let switch = |b: bool| Wanted::Value(ControlValue::Bool(b));
    let int = |i: i64| Wanted::Value(ControlValue::Int(i));
    if let Some(b) = opts.white_balance_auto {
        push("white_balance_auto", switch(b));
    }
    if let Some(b) = opts.focus_auto {
        push("focus_auto", switch(b));
    }
    if let Some(v) = opts.exposure_absolute {
        push("exposure_absolute", int(v));
    }
    if let Some(v) = opts.white_balance_temperature {
        push("white_balance_temperature", int(v));
    }
    if let Some(v) = opts.gain {
        push("gain", int(v));
    }
    if let Some(v) = opts.focus_absolute {
        push("focus_absolute", int(v));
    }
    for (name, value) in &opts.controls {
        out.push(WantedControl {
            key: format!("controls.{name}"),
            target: Target::Name(name.clone()),
            value: Wanted::Value(value.clone()),
        });
    }
    out
}

/// Checks the camera controls of `opts` at config load: modes that exist, manual values only
/// with the automatic mode off, values in range, `controls` names that are names and do not
/// repeat a named key.
pub fn validate(opts: &SourceOptions) -> Result<(), String> {
    let key = |k: &str| format!("source.options.{k}");
    let exposure = opts.exposure_auto.as_ref().map(|e| e.mode()).transpose()?;
    if let Some(v) = opts.exposure_absolute {
        if !exposure.is_some_and(ExposureMode::manual_time) {
            return Err(format!(
                "{} = {v} needs a manual exposure: set exposure_auto = false (or \
                 \"shutter_priority\"), else the camera's automatic exposure overrides it",
                key("exposure_absolute")
            ));
        }
        if !(1..=10_000_000).contains(&v) {
            return Err(format!(
                "{} must be within 1..10000000 (units of 100 µs), got {v}",
                key("exposure_absolute")
            ));
        }
    }
    if let Some(t) = opts.white_balance_temperature {
        if opts.white_balance_auto != Some(false) {
            return Err(format!(
                "{} = {t} needs white_balance_auto = false: with automatic white balance on, \
                 the camera ignores the temperature and the colour cast changes from frame to \
                 frame",
                key("white_balance_temperature")
            ));
        }
        if !(1000..=15_000).contains(&t) {
            return Err(format!(
                "{} must be within 1000..15000 (kelvin), got {t}",
                key("white_balance_temperature")
            ));
        }
    }
    if let Some(g) = opts.gain
        && g < 0
    {
        return Err(format!("{} must not be negative, got {g}", key("gain")));
    }
    if let Some(f) = opts.focus_absolute {
        if opts.focus_auto != Some(false) {
            return Err(format!(
                "{} = {f} needs focus_auto = false, else the camera's autofocus moves it",
                key("focus_absolute")
            ));
        }
        if f < 0 {
            return Err(format!(
                "{} must not be negative, got {f}",
                key("focus_absolute")
            ));
        }
    }
    for (name, value) in &opts.controls {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "{}: {name:?} is not a V4L2 control name (lower case letters, digits and _, as \
                 `v4l2-ctl --list-ctrls` prints them)",
                key("controls")
            ));
        }
        if let Some((named, ..)) = NAMED
            .iter()
            .find(|(k, _, aliases)| *k == name.as_str() || aliases.contains(&name.as_str()))
        {
            return Err(format!(
                "{}.{name}: set it with source.options.{named} instead",
                key("controls")
            ));
        }
        if matches!(value, ControlValue::Name(n) if control_name(n).is_empty()) {
            return Err(format!(
                "{}.{name}: an empty menu entry name",
                key("controls")
            ));
        }
    }
    Ok(())
}

/// Maps the wanted controls onto those a camera offers. The error names the configuration key
/// and says what the camera offers instead.
pub fn resolve(
    wanted: &[WantedControl],
    offered: &[OfferedControl],
) -> Result<Vec<Setting>, String> {
    wanted.iter().map(|w| resolve_one(w, offered)).collect()
}

fn resolve_one(w: &WantedControl, offered: &[OfferedControl]) -> Result<Setting, String> {
    let control = match &w.target {
        Target::Id(id, aliases) => offered
            .iter()
            .find(|c| c.id == *id)
            .or_else(|| offered.iter().find(|c| aliases.contains(&c.name.as_str()))),
        Target::Name(name) => offered.iter().find(|c| &c.name == name),
    };
    let Some(c) = control else {
        let mut names: Vec<&str> = offered
            .iter()
            .filter(|c| c.kind != ControlKind::Other)
            .map(|c| c.name.as_str())
            .collect();
        names.sort_unstable();
        return Err(format!(
            "control {}: the camera has no such control (it offers: {})",
            w.key,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let menu_names = || {
        c.menu
            .iter()
            .map(|(i, n)| format!("{i} {n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bad = |what: String| format!("control {} ({}): {what}", w.key, c.name);
    let (value, boolean) = match (&w.value, c.kind) {
        (_, ControlKind::Other) => {
            return Err(bad(
                "this type of control cannot be set from the configuration".into(),
            ));
        }
        (Wanted::Exposure(mode), ControlKind::Menu) => {
            let index = mode
                .menu_indices()
                .iter()
                .copied()
                .find(|i| c.menu.iter().any(|(j, _)| j == i))
                .ok_or_else(|| {
                    bad(format!(
                        "the camera offers no {mode:?} mode (it offers: {})",
                        menu_names()
                    ))
                })?;
            (index, false)
        }
        (Wanted::Exposure(mode), _) => {
            return Err(bad(format!(
                "expected a menu of exposure modes, the camera has a {:?} control; cannot set {mode:?}",
                c.kind
            )));
        }
        (Wanted::Value(ControlValue::Bool(b)), ControlKind::Boolean) => (i64::from(*b), true),
        (Wanted::Value(ControlValue::Bool(b)), ControlKind::Integer)
            if c.min <= 0 && c.max >= 1 =>
        {
            (i64::from(*b), false)
        }
        (Wanted::Value(ControlValue::Int(v)), ControlKind::Boolean) if (0..=1).contains(v) => {
            (*v, true)
        }
        (Wanted::Value(ControlValue::Int(v)), ControlKind::Integer) => {
            if !(c.min..=c.max).contains(v) {
                return Err(bad(format!(
                    "{v} is outside the camera's range {}..{}",
                    c.min, c.max
                )));
            }
            (*v, false)
        }
        (Wanted::Value(ControlValue::Int(v)), ControlKind::Menu) => {
            if !c.menu.iter().any(|(i, _)| i == v) {
                return Err(bad(format!(
                    "{v} is not one of the camera's entries ({})",
                    menu_names()
                )));
            }
            (*v, false)
        }
        (Wanted::Value(ControlValue::Name(n)), ControlKind::Menu) => {
            let want = control_name(n);
            let index = c
                .menu
                .iter()
                .find(|(_, name)| control_name(name) == want)
                .map(|(i, _)| *i)
                .ok_or_else(|| {
                    bad(format!(
                        "{n:?} is not one of the camera's entries ({})",
                        menu_names()
                    ))
                })?;
            (index, false)
        }
        (Wanted::Value(v), kind) => {
            return Err(bad(format!(
                "{v} does not fit a {kind:?} control (range {}..{})",
                c.min, c.max
            )));
        }
    };
    Ok(Setting {
        key: w.key.clone(),
        id: c.id,
        value,
        boolean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(toml_text: &str) -> SourceOptions {
        toml::from_str(toml_text).unwrap()
    }

    /// A typical UVC camera's controls.
    fn uvc() -> Vec<OfferedControl> {
        let int = |id, name: &str, min, max| OfferedControl {
            id,
            name: name.into(),
            kind: ControlKind::Integer,
            min,
            max,
            menu: vec![],
        };
        let boolean = |id, name: &str| OfferedControl {
            id,
            name: name.into(),
            kind: ControlKind::Boolean,
            min: 0,
            max: 1,
            menu: vec![],
        };
        vec![
            int(0x0098_0900, "brightness", -64, 64),
            boolean(ids::WHITE_BALANCE_AUTO, "white_balance_temperature_auto"),
            int(
                ids::WHITE_BALANCE_TEMPERATURE,
                "white_balance_temperature",
                2800,
                6500,
            ),
            int(ids::GAIN, "gain", 0, 100),
            OfferedControl {
                id: 0x0098_0918,
                name: "power_line_frequency".into(),
                kind: ControlKind::Menu,
                min: 0,
                max: 2,
                menu: vec![
                    (0, "Disabled".into()),
                    (1, "50 Hz".into()),
                    (2, "60 Hz".into()),
                ],
            },
            OfferedControl {
                id: ids::EXPOSURE_AUTO,
                name: "exposure_auto".into(),
                kind: ControlKind::Menu,
                min: 0,
                max: 3,
                menu: vec![
                    (1, "Manual Mode".into()),
                    (3, "Aperture Priority Mode".into()),
                ],
            },
            int(ids::EXPOSURE_ABSOLUTE, "exposure_absolute", 3, 2047),
        ]
    }

    #[test]
    fn names_are_v4l2_ctl_names() {
        assert_eq!(
            control_name("White Balance Temperature, Auto"),
            "white_balance_temperature_auto"
        );
        assert_eq!(control_name("Focus (absolute)"), "focus_absolute");
        assert_eq!(control_name("  50 Hz "), "50_hz");
    }

    #[test]
    fn a_locked_white_balance_and_manual_exposure_resolve_in_order() {
        let o = options(
            "exposure_auto = false\nexposure_absolute = 150\nwhite_balance_auto = false\n\
             white_balance_temperature = 4600\ngain = 10\n\
             controls = { brightness = -5, power_line_frequency = \"50 Hz\" }\n",
        );
        validate(&o).unwrap();
        let settings = resolve(&wanted(&o), &uvc()).unwrap();
        let got: Vec<(&str, i64, bool)> = settings
            .iter()
            .map(|s| (s.key.as_str(), s.value, s.boolean))
            .collect();
        assert_eq!(
            got,
            [
                ("exposure_auto", 1, false),
                ("white_balance_auto", 0, true),
                ("exposure_absolute", 150, false),
                ("white_balance_temperature", 4600, false),
                ("gain", 10, false),
                ("controls.brightness", -5, false),
                ("controls.power_line_frequency", 1, false),
            ]
        );
        // `true` is the camera's automatic mode: aperture priority on a UVC camera.
        let auto = resolve(&wanted(&options("exposure_auto = true")), &uvc()).unwrap();
        assert_eq!(auto[0].value, 3);
        assert!(wanted(&SourceOptions::default()).is_empty());
    }

    #[test]
    fn a_temperature_without_locking_white_balance_is_a_config_error() {
        for text in [
            "white_balance_temperature = 4600",
            "white_balance_auto = true\nwhite_balance_temperature = 4600",
        ] {
            let e = validate(&options(text)).unwrap_err();
            assert!(
                e.contains("white_balance_temperature") && e.contains("white_balance_auto = false"),
                "{e}"
            );
        }
        let e = validate(&options("exposure_absolute = 100")).unwrap_err();
        assert!(e.contains("exposure_auto = false"), "{e}");
        let e = validate(&options("focus_absolute = 3\nfocus_auto = true")).unwrap_err();
        assert!(e.contains("focus_auto = false"), "{e}");
        let e = validate(&options(
            "white_balance_auto = false\nwhite_balance_temperature = 200",
        ))
        .unwrap_err();
        assert!(e.contains("1000..15000"), "{e}");
        let e = validate(&options("exposure_auto = \"sometimes\"")).unwrap_err();
        assert!(
            e.contains("sometimes") && e.contains("aperture_priority"),
            "{e}"
        );
        assert!(
            validate(&options("gain = -1"))
                .unwrap_err()
                .contains("gain")
        );
        let e = validate(&options("controls = { \"White Balance\" = 1 }")).unwrap_err();
        assert!(e.contains("not a V4L2 control name"), "{e}");
        let e = validate(&options(
            "controls = { white_balance_temperature_auto = false }",
        ))
        .unwrap_err();
        assert!(e.contains("source.options.white_balance_auto"), "{e}");
        // Types are checked by the parser: a temperature must be a number.
        assert!(toml::from_str::<SourceOptions>("white_balance_temperature = \"warm\"").is_err());
        assert!(toml::from_str::<SourceOptions>("white_balance_auto = 0").is_err());
    }

    #[test]
    fn what_the_camera_lacks_or_cannot_take_is_an_error_naming_the_control() {
        let e = resolve(&wanted(&options("focus_auto = false")), &uvc()).unwrap_err();
        assert!(
            e.contains("focus_auto") && e.contains("no such control") && e.contains("brightness"),
            "{e}"
        );
        let o = options("white_balance_auto = false\nwhite_balance_temperature = 9000");
        let e = resolve(&wanted(&o), &uvc()).unwrap_err();
        assert!(
            e.contains("white_balance_temperature") && e.contains("2800..6500"),
            "{e}"
        );
        let o = options("controls = { power_line_frequency = \"100 Hz\" }");
        let e = resolve(&wanted(&o), &uvc()).unwrap_err();
        assert!(
            e.contains("power_line_frequency") && e.contains("\"50 Hz\""),
            "{e}"
        );
        let e = resolve(
            &wanted(&options("exposure_auto = \"shutter_priority\"")),
            &uvc(),
        )
        .unwrap_err();
        assert!(
            e.contains("ShutterPriority") && e.contains("Manual Mode"),
            "{e}"
        );
        let e = resolve(&wanted(&options("controls = { brightness = 99 }")), &uvc()).unwrap_err();
        assert!(e.contains("-64..64"), "{e}");
        let e = resolve(&wanted(&options("controls = { contrast = 1 }")), &uvc()).unwrap_err();
        assert!(e.contains("controls.contrast"), "{e}");
    }
}
