//! Two lines of 16 characters: the status text, and the displays that show it.
//!
//! [`status_lines`] turns a [`DeviceStatus`] into exactly two lines of exactly [`COLS`] printable
//! ASCII characters. A [`TextDisplay`] shows them: [`Hd44780Display`] (16×2 LCD on a PCF8574 I2C
//! backpack) or [`Ssd1306Display`] (128×64 OLED in text mode). Both write to the bus only when a
//! line changed.
//!
//! | phase | line 1 | line 2 |
//! | --- | --- | --- |
//! | starting | `LEUKOSCOPE` | `starting` |
//! | fault | `FAULT` | what broke, e.g. `camera lost` |
//! | idle, no slide | `READY` | `no slide` |
//! | a slide | slide id, then `F:<fields>` (good fields so far) at the right | verdict so far, last label, its confidence (`REFER blast  91%`), or `RETAKE <reason>` |

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{Error as _, ErrorKind, I2c};
use i2c_character_display::{CharacterDisplayError, CharacterDisplayPCF8574T, LcdDisplayType};
use ssd1306::mode::{DisplayConfig, TerminalMode};
use ssd1306::prelude::{DisplayRotation, I2CInterface};
use ssd1306::size::DisplaySize128x64;
use ssd1306::{I2CDisplayInterface, Ssd1306};

use crate::status::{DeviceStatus, LastFrame, Phase};

/// Characters per line.
pub const COLS: usize = 16;

/// The default I2C address of a PCF8574 LCD backpack (PCF8574A backpacks use 0x3F).
pub const PCF8574_ADDRESS: u8 = 0x27;

/// The default I2C address of an SSD1306 OLED (some modules use 0x3D).
pub const SSD1306_ADDRESS: u8 = 0x3C;

/// Makes `text` exactly [`COLS`] characters: characters other than printable ASCII (and `\`
/// and `~`, which an HD44780's character ROM shows as ¥ and →) become `?`, longer text is cut,
/// shorter text is padded with spaces.
pub fn fit_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .take(COLS)
        .map(|c| match c {
            '\\' | '~' => '?',
            ' '..='}' => c,
            _ => '?',
        })
        .collect();
    let pad = COLS - line.chars().count();
    line.extend(std::iter::repeat_n(' ', pad));
    line
}

/// `left` then `right` flush with the right edge; `left` is cut so that at least one space
/// separates them and `right` stays whole (unless `right` alone is too long).
fn two_sided(left: &str, right: &str) -> String {
    let right_len = right.chars().count();
    if right_len + 1 >= COLS {
        return fit_line(right);
    }
    let room = COLS - right_len - 1;
    let left: String = left.chars().take(room).collect();
    let gap = COLS - left.chars().count() - right_len;
    fit_line(&format!("{left}{}{right}", " ".repeat(gap)))
}

fn percent(confidence: f32) -> String {
    if confidence.is_finite() {
        format!("{:.0}%", (confidence.clamp(0.0, 1.0) * 100.0).round())
    } else {
        "?%".to_string()
    }
}

/// The two display lines for a device status (see the module table).
pub fn status_lines(status: &DeviceStatus) -> [String; 2] {
    match status.phase {
        Phase::Starting => return [fit_line("LEUKOSCOPE"), fit_line("starting")],
        Phase::Fault(fault) => return [fit_line("FAULT"), fit_line(fault.describe())],
        Phase::Idle if status.slide.is_none() => {
            return [fit_line("READY"), fit_line("no slide")];
        }
        Phase::Idle | Phase::Screening => {}
    }
    let slide = status.slide.as_deref().unwrap_or("-");
    let first = two_sided(slide, &format!("F:{}", status.fields));
    let verdict = status.verdict.map(|v| v.short());
    let second = match &status.last {
        Some(LastFrame::Classified { label, confidence }) => {
            let left = match verdict {
                Some(v) => format!("{v} {label}"),
                None => label.clone(),
            };
            two_sided(&left, &percent(*confidence))
        }
        Some(LastFrame::Retake(reason)) => fit_line(&format!("RETAKE {}", reason.as_str())),
        None => fit_line(verdict.unwrap_or(if status.phase == Phase::Screening {
            "screening"
        } else {
            "-"
        })),
    };
    [first, second]
}

/// Showing text on a display failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisplayError {
    /// The I2C bus reported an error.
    #[error("display I2C bus: {0}")]
    I2c(ErrorKind),
    /// The display driver reported an error.
    #[error("display driver: {0}")]
    Driver(String),
}

/// Something that shows two lines of text.
pub trait TextDisplay {
    /// Shows `lines` (each is passed through [`fit_line`] first). Implementations skip bus
    /// traffic for lines that are already shown.
    fn show(&mut self, lines: &[String; 2]) -> Result<(), DisplayError>;
}

impl<T: TextDisplay + ?Sized> TextDisplay for Box<T> {
    fn show(&mut self, lines: &[String; 2]) -> Result<(), DisplayError> {
        (**self).show(lines)
    }
}

/// The display of a kit that has none: shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDisplay;

impl TextDisplay for NoDisplay {
    fn show(&mut self, _lines: &[String; 2]) -> Result<(), DisplayError> {
        Ok(())
    }
}

/// Remembers what each row shows so that unchanged rows are not rewritten.
#[derive(Debug, Default)]
struct Shown([Option<String>; 2]);

impl Shown {
    /// Calls `write(row, text)` for each row whose text differs from what is shown. A failed
    /// row is forgotten so the next call rewrites it.
    fn update<E>(
        &mut self,
        lines: &[String; 2],
        mut write: impl FnMut(u8, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        for (row, text) in lines.iter().enumerate() {
            let text = fit_line(text);
            if self.0[row].as_deref() == Some(text.as_str()) {
                continue;
            }
            self.0[row] = None;
            write(row as u8, &text)?;
            self.0[row] = Some(text);
        }
        Ok(())
    }
}

/// A 16×2 HD44780 character LCD behind a PCF8574 I2C backpack (P0 RS, P1 RW, P2 E,
/// P3 backlight, P4–P7 data), driven by the `i2c-character-display` crate.
pub struct Hd44780Display<I: I2c, D: DelayNs> {
    lcd: CharacterDisplayPCF8574T<I, D>,
    shown: Shown,
}

impl<I: I2c, D: DelayNs> Hd44780Display<I, D> {
    /// Initialises the LCD at `address` (usually [`PCF8574_ADDRESS`]) and turns the backlight on.
    pub fn new(i2c: I, address: u8, delay: D) -> Result<Self, DisplayError> {
        let mut lcd = CharacterDisplayPCF8574T::new_with_address(
            i2c,
            address,
            LcdDisplayType::Lcd16x2,
            delay,
        );
        lcd.init().map_err(lcd_error)?;
        Ok(Hd44780Display {
            lcd,
            shown: Shown::default(),
        })
    }
}

fn lcd_error<I: I2c>(e: CharacterDisplayError<I>) -> DisplayError {
    match e {
        CharacterDisplayError::I2cError(e) => DisplayError::I2c(e.kind()),
        other => DisplayError::Driver(<&'static str>::from(&other).to_string()),
    }
}

impl<I: I2c, D: DelayNs> TextDisplay for Hd44780Display<I, D> {
    fn show(&mut self, lines: &[String; 2]) -> Result<(), DisplayError> {
        let lcd = &mut self.lcd;
        self.shown.update(lines, |row, text| {
            lcd.set_cursor(0, row)
                .and_then(|lcd| lcd.print(text))
                .map(|_| ())
                .map_err(lcd_error)
        })
    }
}

/// A 128×64 SSD1306 OLED on I2C in text mode (16 columns of 8×8 characters); the two lines go
/// on the top two text rows.
pub struct Ssd1306Display<I: I2c> {
    oled: Ssd1306<I2CInterface<I>, DisplaySize128x64, TerminalMode>,
    shown: Shown,
}

impl<I: I2c> Ssd1306Display<I> {
    /// Initialises the OLED at `address` (usually [`SSD1306_ADDRESS`]) and clears it.
    pub fn new(i2c: I, address: u8) -> Result<Self, DisplayError> {
        let interface = I2CDisplayInterface::new_custom_address(i2c, address);
        let mut oled = Ssd1306::new(interface, DisplaySize128x64, DisplayRotation::Rotate0)
            .into_terminal_mode();
        oled.init().map_err(oled_error)?;
        oled.clear().map_err(oled_error)?;
        Ok(Ssd1306Display {
            oled,
            shown: Shown::default(),
        })
    }
}

fn oled_error(e: ssd1306::mode::TerminalModeError) -> DisplayError {
    DisplayError::Driver(format!("SSD1306 {e:?}"))
}

impl<I: I2c> TextDisplay for Ssd1306Display<I> {
    fn show(&mut self, lines: &[String; 2]) -> Result<(), DisplayError> {
        let oled = &mut self.oled;
        self.shown.update(lines, |row, text| {
            oled.set_position(0, row).map_err(oled_error)?;
            text.chars()
                .try_for_each(|c| oled.print_char(c))
                .map_err(oled_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Fault, RetakeReason, Verdict};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    /// A slide with `fields` good fields, seen in three times as many frames (the display shows
    /// fields).
    fn slide(fields: u32, verdict: Option<Verdict>, last: Option<LastFrame>) -> DeviceStatus {
        DeviceStatus {
            phase: Phase::Screening,
            slide: Some("S-0012".into()),
            frames: fields.saturating_mul(3),
            fields,
            verdict,
            last,
        }
    }

    fn classified(label: &str, confidence: f32) -> Option<LastFrame> {
        Some(LastFrame::Classified {
            label: label.into(),
            confidence,
        })
    }

    #[test]
    fn fit_line_pads_truncates_and_replaces() {
        assert_eq!(fit_line(""), " ".repeat(16));
        assert_eq!(fit_line("abc"), "abc             ");
        assert_eq!(fit_line("0123456789abcdefXYZ"), "0123456789abcdef");
        assert_eq!(fit_line("Zählung µ\t~\\ok"), "Z?hlung ????ok  ");
        assert_eq!(fit_line("日本語"), "???             ");
    }

    #[test]
    fn status_lines_for_each_phase() {
        let s = DeviceStatus::starting();
        assert_eq!(status_lines(&s), ["LEUKOSCOPE      ", "starting        "]);
        assert_eq!(
            status_lines(&DeviceStatus::idle()),
            ["READY           ", "no slide        "]
        );
        let mut s = slide(0, None, None);
        s.phase = Phase::Fault(Fault::CameraLost);
        assert_eq!(status_lines(&s), ["FAULT           ", "camera lost     "]);
    }

    #[test]
    fn status_lines_while_screening() {
        assert_eq!(
            status_lines(&slide(0, None, None)),
            ["S-0012       F:0", "screening       "]
        );
        assert_eq!(
            status_lines(&slide(
                37,
                Some(Verdict::NoBlasts),
                classified("lymphocyte", 0.974)
            )),
            ["S-0012      F:37", "NEG lymphocy 97%"]
        );
        assert_eq!(
            status_lines(&slide(120, Some(Verdict::Refer), classified("blast", 0.91))),
            ["S-0012     F:120", "REFER blast  91%"]
        );
        assert_eq!(
            status_lines(&slide(3, None, classified("blast", 1.0))),
            ["S-0012       F:3", "blast       100%"]
        );
        assert_eq!(
            status_lines(&slide(
                4,
                None,
                Some(LastFrame::Retake(RetakeReason::Exposure))
            )),
            ["S-0012       F:4", "RETAKE exposure "]
        );
        assert_eq!(
            status_lines(&slide(4, None, classified("x", f32::NAN)))[1],
            "x             ?%"
        );
    }

    #[test]
    fn long_slide_ids_are_cut_but_the_field_count_stays() {
        let mut s = slide(123_456, None, None);
        s.slide = Some("HOSPITAL-2025-ABCDEFG".into());
        assert_eq!(status_lines(&s)[0], "HOSPITA F:123456");
        s.fields = u32::MAX;
        assert_eq!(status_lines(&s)[0], "HOS F:4294967295");
        s.slide = None;
        s.phase = Phase::Idle;
        assert_eq!(status_lines(&s)[0], "READY           ");
    }

    #[test]
    fn status_lines_are_always_two_by_sixteen_ascii() {
        let labels = ["", "é", "a very long class label indeed", "blast"];
        let slides = [None, Some(String::new()), Some("ß".repeat(40))];
        for label in labels {
            for slide_id in &slides {
                for frames in [0, 9, 99_999, u32::MAX] {
                    for conf in [-1.0, 0.0, 0.5, 2.0, f32::INFINITY] {
                        let s = DeviceStatus {
                            phase: Phase::Screening,
                            slide: slide_id.clone(),
                            frames,
                            fields: frames,
                            verdict: Some(Verdict::Uncertain),
                            last: classified(label, conf),
                        };
                        for line in status_lines(&s) {
                            assert_eq!(line.len(), COLS, "{line:?}");
                            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
                        }
                    }
                }
            }
        }
    }

    // The PCF8574 wiring: P0 RS, P1 RW, P2 E, P3 backlight, P4-P7 data. One nibble is two writes
    // (E high, then E low); one byte is the high nibble then the low nibble.
    const ADDR: u8 = 0x27;
    const RS: u8 = 0x01;
    const E: u8 = 0x04;
    const BACKLIGHT: u8 = 0x08;

    fn nibble(value: u8, flags: u8) -> [Transaction; 2] {
        let bits = (value << 4) | flags;
        [
            Transaction::write(ADDR, vec![bits | E]),
            Transaction::write(ADDR, vec![bits]),
        ]
    }

    fn byte(value: u8, flags: u8) -> Vec<Transaction> {
        let mut t = nibble(value >> 4, flags).to_vec();
        t.extend(nibble(value & 0x0f, flags));
        t
    }

    fn init_sequence() -> Vec<Transaction> {
        let mut t = Vec::new();
        for _ in 0..3 {
            t.extend(nibble(0x3, 0));
        }
        t.extend(nibble(0x2, 0));
        // function set (4-bit, 2 lines), display on, entry mode left, clear, home
        for cmd in [0x28, 0x0c, 0x06, 0x01, 0x02] {
            t.extend(byte(cmd, 0));
        }
        t.push(Transaction::write(ADDR, vec![0x20 | BACKLIGHT]));
        t
    }

    fn write_row(row: u8, text: &str) -> Vec<Transaction> {
        let mut t = byte(0x80 | (row * 0x40), BACKLIGHT);
        for b in text.bytes() {
            t.extend(byte(b, BACKLIGHT | RS));
        }
        t
    }

    #[test]
    fn hd44780_writes_changed_rows_only() {
        let mut expected = init_sequence();
        let first = [
            "S-0012      F:37".to_string(),
            "NEG lymphocy 97%".to_string(),
        ];
        expected.extend(write_row(0, &first[0]));
        expected.extend(write_row(1, &first[1]));
        // Only line 1 changes in the second update; the third update changes nothing.
        let second = ["S-0012      F:38".to_string(), first[1].clone()];
        expected.extend(write_row(0, &second[0]));

        let mut bus = Mock::new(&expected);
        let mut lcd = Hd44780Display::new(bus.clone(), ADDR, NoopDelay::new()).unwrap();
        lcd.show(&first).unwrap();
        lcd.show(&second).unwrap();
        lcd.show(&second).unwrap();
        bus.done();
    }

    #[test]
    fn hd44780_pads_short_text_to_the_full_row() {
        let mut expected = init_sequence();
        expected.extend(write_row(0, "hi              "));
        expected.extend(write_row(1, "?               "));
        let mut bus = Mock::new(&expected);
        let mut lcd = Hd44780Display::new(bus.clone(), ADDR, NoopDelay::new()).unwrap();
        lcd.show(&["hi".into(), "é".into()]).unwrap();
        bus.done();
    }

    #[test]
    fn hd44780_bus_error_is_reported_and_the_row_retried() {
        let mut expected = init_sequence();
        expected.push(
            Transaction::write(ADDR, vec![0x80 | BACKLIGHT | E]).with_error(
                ErrorKind::NoAcknowledge(embedded_hal::i2c::NoAcknowledgeSource::Address),
            ),
        );
        expected.extend(write_row(0, "retry           "));
        expected.extend(write_row(1, "                "));
        let mut bus = Mock::new(&expected);
        let mut lcd = Hd44780Display::new(bus.clone(), ADDR, NoopDelay::new()).unwrap();
        let lines = ["retry".to_string(), String::new()];
        assert!(matches!(
            lcd.show(&lines),
            Err(DisplayError::I2c(ErrorKind::NoAcknowledge(_)))
        ));
        lcd.show(&lines).unwrap();
        bus.done();
    }

    /// Records every write; the SSD1306 init and text sequences are long and belong to the
    /// driver, so the tests check addresses, control bytes and that unchanged text is silent.
    struct Recorder(Log);

    type Log = std::rc::Rc<std::cell::RefCell<Vec<(u8, Vec<u8>)>>>;

    impl embedded_hal::i2c::ErrorType for Recorder {
        type Error = core::convert::Infallible;
    }

    impl I2c for Recorder {
        fn transaction(
            &mut self,
            address: u8,
            operations: &mut [embedded_hal::i2c::Operation<'_>],
        ) -> Result<(), Self::Error> {
            for op in operations {
                if let embedded_hal::i2c::Operation::Write(bytes) = op {
                    self.0.borrow_mut().push((address, bytes.to_vec()));
                }
            }
            Ok(())
        }
    }

    #[test]
    fn ssd1306_writes_glyphs_for_changed_rows_only() {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut oled = Ssd1306Display::new(Recorder(log.clone()), 0x3d).unwrap();
        assert!(log.borrow().iter().all(|(addr, _)| *addr == 0x3d));
        assert!(!log.borrow().is_empty());
        log.borrow_mut().clear();

        let lines = [
            "S-0012      F:37".to_string(),
            "NEG lymphocy 97%".to_string(),
        ];
        oled.show(&lines).unwrap();
        let data: Vec<Vec<u8>> = log
            .borrow()
            .iter()
            .filter(|(_, bytes)| bytes[0] == 0x40)
            .map(|(_, bytes)| bytes[1..].to_vec())
            .collect();
        // One 8-byte glyph per character; a space is blank.
        assert_eq!(data.len(), 32);
        assert!(data.iter().all(|glyph| glyph.len() == 8));
        assert_eq!(data[6], vec![0; 8]);
        assert_ne!(data[0], vec![0; 8]);
        assert!(
            log.borrow()
                .iter()
                .all(|(addr, b)| *addr == 0x3d && (b[0] == 0x00 || b[0] == 0x40))
        );

        log.borrow_mut().clear();
        oled.show(&lines).unwrap();
        assert!(log.borrow().is_empty());

        let changed = [lines[0].clone(), "NEG lymphocy 98%".to_string()];
        oled.show(&changed).unwrap();
        let glyphs = log.borrow().iter().filter(|(_, b)| b[0] == 0x40).count();
        assert_eq!(glyphs, 16);
    }

    #[test]
    fn no_display_and_boxed_displays_accept_text() {
        let mut d: Box<dyn TextDisplay> = Box::new(NoDisplay);
        d.show(&["a".into(), "b".into()]).unwrap();
    }
}
