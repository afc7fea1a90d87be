//! TOTP (RFC 6238) codes from a base32 seed or an `otpauth://` URI.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use sha2::Digest;
use totp_rs::{Algorithm, Builder, Secret as TotpSecret, Totp};

use super::VaultError;
use crate::clock::Clock;
use crate::store::Store;

/// A code that expires in less than this is not used: the next period's code is,
/// so that a login never races the boundary.
pub const TOTP_MIN_REMAINING_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// How to compute codes for one account. Debug shows the parameters, never the seed.
#[derive(Clone)]
pub struct TotpSpec {
    totp: Totp,
}

impl fmt::Debug for TotpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpSpec")
            .field("digits", &self.digits())
            .field("period", &self.period())
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

impl TotpSpec {
    /// A base32 seed (spaces, dashes, padding and case ignored; 6 digits, 30 s, SHA-1)
    /// or an `otpauth://totp/…?secret=…&digits=…&period=…&algorithm=…` URI.
    /// Short (80-bit) seeds are accepted: many apps issue them.
    pub fn parse(src: &str) -> Result<TotpSpec, VaultError> {
        let src = src.trim();
        let totp = if src
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("otpauth://"))
        {
            // The error text of the URL parser may quote the URI (and so the seed).
            Totp::from_url_unchecked(src)
                .map_err(|_| VaultError::Totp("not a valid otpauth:// TOTP URI".into()))?
        } else {
            let clean: String = src
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '='))
                .map(|c| c.to_ascii_uppercase())
                .collect();
            if clean.is_empty() {
                return Err(VaultError::Totp("empty seed".into()));
            }
            let secret = TotpSecret::try_from_base32(&clean)
                .map_err(|_| VaultError::Totp("seed is not valid base32".into()))?;
            Builder::new()
                .with_secret(secret)
                .with_skew(1)
                .build_noncompliant()
        };
        let spec = TotpSpec { totp };
        if !(6..=9).contains(&spec.digits()) {
            return Err(VaultError::Totp(format!(
                "{} digits (6 to 9 supported)",
                spec.digits()
            )));
        }
        if spec.period() == 0 {
            return Err(VaultError::Totp("period 0".into()));
        }
        Ok(spec)
    }

    pub fn digits(&self) -> u8 {
        self.totp.digits()
    }

    /// Seconds per code.
    pub fn period(&self) -> u64 {
        self.totp.step()
    }

    pub fn algorithm(&self) -> TotpAlgorithm {
        match self.totp.algorithm() {
            Algorithm::SHA256 => TotpAlgorithm::Sha256,
            Algorithm::SHA512 => TotpAlgorithm::Sha512,
            _ => TotpAlgorithm::Sha1,
        }
    }

    /// The code valid at `unix_time` (seconds).
    pub fn code_at(&self, unix_time: u64) -> String {
        self.totp.generate(unix_time).to_string()
    }

    /// The time step (counter) a login at `unix_time` should use: the current one, or the
    /// next one when the current code expires in under [`TOTP_MIN_REMAINING_SECS`].
    pub fn step_for_login(&self, unix_time: u64) -> u64 {
        let p = self.period();
        let step = unix_time / p;
        let remaining = p - unix_time % p;
        if remaining < TOTP_MIN_REMAINING_SECS {
            step + 1
        } else {
            step
        }
    }

    /// The code of a time step.
    pub fn code_for_step(&self, step: u64) -> String {
        self.code_at(step.saturating_mul(self.period()))
    }

    /// The code to type now (see [`Self::step_for_login`]).
    pub fn current_code(&self, clock: &dyn Clock) -> String {
        self.code_for_step(self.step_for_login(unix_now(clock)))
    }

    /// Names the account behind the seed without revealing it: SHA-256 over a domain,
    /// the period and the HMAC of counter 0 (the same for a base32 seed and an
    /// `otpauth://` URI of it; the seed cannot be recovered from it).
    pub fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(b"usher totp window\0");
        h.update(self.period().to_be_bytes());
        h.update(self.totp.sign(0).as_ref());
        hex::encode(h.finalize())
    }
}

/// The `otpauth://` URI of the one QR code in a PNG image (a screenshot of an MFA
/// enrolment page). Errors never quote what a code holds.
pub fn otpauth_from_png(png: &[u8]) -> Result<String, VaultError> {
    let bad = |what: &str| VaultError::Totp(format!("the screenshot could not be read: {what}"));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|_| bad("not a PNG"))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|_| bad("corrupt PNG"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let line = info.line_size;
    let luma = |x: usize, y: usize| -> u8 {
        let i = y * line + x * channels;
        match (channels, buf.get(i..i + channels)) {
            (3 | 4, Some(p)) => {
                let l =
                    (u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000;
                u8::try_from(l).unwrap_or(u8::MAX)
            }
            (_, Some(p)) => p[0],
            (_, None) => u8::MAX,
        }
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
    let mut found: Vec<String> = Vec::new();
    let mut unreadable = 0usize;
    for grid in img.detect_grids() {
        match grid.decode() {
            Ok((_, content))
                if content
                    .get(..10)
                    .is_some_and(|p| p.eq_ignore_ascii_case("otpauth://")) =>
            {
                if !found.contains(&content) {
                    found.push(content);
                }
            }
            Ok(_) => {}
            Err(_) => unreadable += 1,
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if unreadable > 0 => Err(VaultError::Totp(format!(
            "{unreadable} QR code(s) in view could not be decoded"
        ))),
        0 => Err(VaultError::Totp(
            "no QR code of an otpauth:// URI in view".into(),
        )),
        n => Err(VaultError::Totp(format!(
            "{n} different otpauth:// QR codes in view; the locator must show one"
        ))),
    }
}

fn unix_now(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().timestamp()).unwrap_or(0)
}

/// Hands out TOTP codes so that no code window is used twice: apps accept a code once
/// and count a replay as a failed sign-in (which may lock the account). The last step
/// used is kept per account (seed fingerprint) in this process and, when the tracker is
/// [`shared`](Self::shared), in the database, so that every process on it agrees.
#[derive(Clone, Default)]
pub struct TotpTracker {
    // Keyed by the seed's fingerprint, so the maps themselves hold no secret.
    used: Arc<Mutex<HashMap<String, u64>>>,
    /// A step taken by [`reserve`](Self::reserve) for the next code of the account.
    reserved: Arc<Mutex<HashMap<String, u64>>>,
    shared: Option<Store>,
}

impl fmt::Debug for TotpTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpTracker")
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// Waiting for a free window gives up after this many periods (another process keeps
/// taking them: something is wrong).
const MAX_WAIT_PERIODS: u64 = 4;

impl TotpTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that takes its windows in `store` (table `totp_windows`), shared with
    /// every process on the same database.
    pub fn shared(store: Store) -> Self {
        TotpTracker {
            shared: Some(store),
            ..Self::default()
        }
    }

    /// How long to wait before [`code`](Self::code) can hand out an unused window for
    /// `seed` (zero when one is free now), as far as this process knows.
    pub fn wait_for_unused(&self, seed: &str, clock: &dyn Clock) -> std::time::Duration {
        let (Ok(spec), Ok(used)) = (TotpSpec::parse(seed), self.used.lock()) else {
            return std::time::Duration::ZERO;
        };
        let now = unix_now(clock);
        let step = next_step(&spec, now, used.get(&spec.fingerprint()).copied());
        if step > now / spec.period() + 1 {
            std::time::Duration::from_secs((step - 1) * spec.period() - now + 1)
        } else {
            std::time::Duration::ZERO
        }
    }

    /// Takes an unused code window for the next sign-in with `seed`, waiting while the
    /// open ones (current and next) are used: in the database when shared, else in this
    /// process. The next [`code`](Self::code) for the seed is that window's. Call it
    /// right before each sign-in attempt.
    pub async fn reserve(&self, seed: &str, clock: &dyn Clock) -> Result<(), VaultError> {
        let spec = TotpSpec::parse(seed)?;
        let key = spec.fingerprint();
        let period = spec.period();
        let mut waited = 0u64;
        loop {
            let now = unix_now(clock);
            let last_local = self.used.lock().ok().and_then(|u| u.get(&key).copied());
            let wanted = next_step(&spec, now, last_local);
            let max = now / period + 1;
            let taken = match &self.shared {
                Some(store) => store
                    .take_totp_step(&key, to_i64(wanted), to_i64(max))
                    .await?
                    .map(to_u64)
                    .map_err(to_u64),
                None if wanted <= max => Ok(wanted),
                None => Err(wanted.saturating_sub(1)),
            };
            match taken {
                Ok(step) => {
                    if let (Ok(mut r), Ok(mut u)) = (self.reserved.lock(), self.used.lock()) {
                        r.insert(key.clone(), step);
                        let last = u.entry(key).or_insert(step);
                        *last = (*last).max(step);
                    }
                    return Ok(());
                }
                Err(last) => {
                    // Step `last + 1` may be typed once it is at most one step ahead.
                    let wait = (last * period + 1).saturating_sub(now).max(1);
                    waited += wait;
                    if waited > MAX_WAIT_PERIODS * period {
                        return Err(VaultError::Totp(format!(
                            "no unused code window for {}s: another process keeps using them",
                            waited - wait
                        )));
                    }
                    tracing::info!(
                        wait_s = wait,
                        "waiting for an unused TOTP window (the open ones were used)"
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                }
            }
        }
    }

    /// Gives back the window [`reserve`](Self::reserve) took for `seed` when no code
    /// was handed out of it (the sign-in failed before the code was typed): the app
    /// never saw it, and a wasted window costs the next sign-in up to a period of
    /// waiting. A window some code was handed out of stays used.
    /// Returns true when a code was handed out of the window (the sign-in typed it).
    pub async fn release_unused(&self, seed: &str) -> Result<bool, VaultError> {
        let spec = TotpSpec::parse(seed)?;
        let key = spec.fingerprint();
        let Some(step) = self.reserved.lock().ok().and_then(|mut r| r.remove(&key)) else {
            return Ok(true);
        };
        if let Ok(mut used) = self.used.lock()
            && used.get(&key) == Some(&step)
        {
            used.insert(key.clone(), step.saturating_sub(1));
        }
        if let Some(store) = &self.shared {
            store
                .give_back_totp_step(&key, to_i64(step))
                .await
                .map_err(VaultError::from)?;
        }
        Ok(false)
    }

    /// The code to type now: the window [`reserve`](Self::reserve) took, else one that no
    /// earlier call in this process used. After the step chosen by
    /// [`TotpSpec::step_for_login`] was used, the following step is taken (verifiers
    /// accept one step of skew); when that one is used too, this fails with the wait.
    pub fn code(&self, seed: &str, clock: &dyn Clock) -> Result<String, VaultError> {
        let spec = TotpSpec::parse(seed)?;
        let key = spec.fingerprint();
        if let Some(step) = self.reserved.lock().ok().and_then(|mut r| r.remove(&key)) {
            return Ok(spec.code_for_step(step));
        }
        let now = unix_now(clock);
        let mut used = self
            .used
            .lock()
            .map_err(|_| VaultError::Totp("tracker poisoned".into()))?;
        let step = next_step(&spec, now, used.get(&key).copied());
        if step > now / spec.period() + 1 {
            let wait = (step - 1) * spec.period() - now;
            return Err(VaultError::Totp(format!(
                "no unused code window left; the next one opens in {wait}s"
            )));
        }
        used.insert(key, step);
        Ok(spec.code_for_step(step))
    }
}

/// The step a sign-in at `now` should use given the last one used.
fn next_step(spec: &TotpSpec, now: u64, last: Option<u64>) -> u64 {
    let wanted = spec.step_for_login(now);
    match last {
        Some(last) if last >= wanted => last + 1,
        _ => wanted,
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    /// A PNG like a screenshot: a page-coloured canvas with QR codes drawn on it
    /// (4 pixels a module, with the quiet zone), in RGBA as Chromium captures.
    fn screenshot_with(codes: &[&str]) -> Vec<u8> {
        let (w, h) = (400usize, 240usize);
        let mut px = vec![250u8; w * h * 4];
        for (n, text) in codes.iter().enumerate() {
            let code = qrcode::QrCode::new(text.as_bytes()).expect("qr");
            let width = code.width();
            let colors = code.to_colors();
            let (ox, oy) = (20 + n * 200, 20);
            for y in 0..width + 8 {
                for x in 0..width + 8 {
                    let dark = x >= 4
                        && y >= 4
                        && x < width + 4
                        && y < width + 4
                        && colors[(y - 4) * width + (x - 4)] == qrcode::Color::Dark;
                    let v = if dark { 20 } else { 255 };
                    for dy in 0..4 {
                        for dx in 0..4 {
                            let i = ((oy + y * 4 + dy) * w + ox + x * 4 + dx) * 4;
                            px[i..i + 3].copy_from_slice(&[v, v, v]);
                            px[i + 3] = 255;
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
            enc.set_color(png::ColorType::Rgba);
            enc.set_depth(png::BitDepth::Eight);
            let mut wr = enc.write_header().expect("header");
            wr.write_image_data(&px).expect("data");
        }
        out
    }

    #[test]
    fn the_otpauth_uri_of_a_qr_code_is_read_from_a_screenshot() {
        let uri = "otpauth://totp/Acme:admin%40acme.example?secret=KRSXG5CTMVRXEZLUKN2XAZLSKNSWG4TFOQ&issuer=Acme";
        let got = otpauth_from_png(&screenshot_with(&[uri])).expect("decoded");
        assert_eq!(got, uri);
        assert!(TotpSpec::parse(&got).is_ok());
    }

    #[test]
    fn no_code_another_payload_or_two_codes_are_errors_that_quote_nothing() {
        let e = otpauth_from_png(&screenshot_with(&[])).expect_err("blank");
        assert!(e.to_string().contains("no QR code"), "{e}");
        let e = otpauth_from_png(&screenshot_with(&["https://example.test/secret-link"]))
            .expect_err("not otpauth");
        assert!(!e.to_string().contains("secret-link"), "{e}");
        let a = "otpauth://totp/A?secret=JBSWY3DPEHPK3PXP";
        let b = "otpauth://totp/B?secret=KRSXG5CTMVRXEZLU";
        let e = otpauth_from_png(&screenshot_with(&[a, b])).expect_err("two");
        let msg = e.to_string();
        assert!(msg.contains("2 different"), "{msg}");
        assert!(
            !msg.contains("JBSWY3DP") && !msg.contains("KRSXG5CT"),
            "{msg}"
        );
        let e = otpauth_from_png(b"not a png").expect_err("garbage");
        assert!(e.to_string().contains("not a PNG"), "{e}");
    }

    struct At(i64);
    impl Clock for At {
        fn now(&self) -> DateTime<Utc> {
            Utc.timestamp_opt(self.0, 0).single().unwrap_or_default()
        }
    }

    fn b32(ascii: &str) -> String {
        // RFC 4648 base32 without padding, to express the RFC 6238 seeds.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut out = String::new();
        let (mut buf, mut bits) = (0u32, 0);
        for b in ascii.bytes() {
            buf = (buf << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
                bits -= 5;
            }
        }
        if bits > 0 {
            out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
        }
        out
    }

    fn uri(seed: &str, alg: &str) -> String {
        format!(
            "otpauth://totp/Test:ops@example.com?secret={}&digits=8&period=30&algorithm={alg}&issuer=Test",
            b32(seed)
        )
    }

    const SEED20: &str = "12345678901234567890";
    const SEED32: &str = "12345678901234567890123456789012";
    const SEED64: &str = "1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc6238_vectors() {
        let sha1 = TotpSpec::parse(&uri(SEED20, "SHA1")).expect("sha1");
        let sha256 = TotpSpec::parse(&uri(SEED32, "SHA256")).expect("sha256");
        let sha512 = TotpSpec::parse(&uri(SEED64, "SHA512")).expect("sha512");
        assert_eq!(sha256.algorithm(), TotpAlgorithm::Sha256);
        assert_eq!(sha512.algorithm(), TotpAlgorithm::Sha512);
        assert_eq!((sha1.digits(), sha1.period()), (8, 30));
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, a, b, c) in table {
            assert_eq!(sha1.code_at(t), a, "sha1 at {t}");
            assert_eq!(sha256.code_at(t), b, "sha256 at {t}");
            assert_eq!(sha512.code_at(t), c, "sha512 at {t}");
        }
    }

    #[test]
    fn base32_seed_80_bit_and_defaults() {
        // 80-bit seed (16 base32 chars), as many apps issue; lower case and spaces ok.
        let s = TotpSpec::parse("jbsw y3dp ehpk 3pxp").expect("80-bit seed");
        assert_eq!((s.digits(), s.period()), (6, 30));
        assert_eq!(s.algorithm(), TotpAlgorithm::Sha1);
        assert_eq!(s.code_at(59).len(), 6);
        assert!(TotpSpec::parse("not base32 !").is_err());
        assert!(TotpSpec::parse("").is_err());
        assert!(!format!("{s:?}").contains("JBSW"));
    }

    #[test]
    fn current_code_skips_a_window_about_to_close() {
        let s = TotpSpec::parse("JBSWY3DPEHPK3PXP").expect("seed");
        // Windows start at multiples of 30: 999_999_990 is one.
        // 25 s into a window: 5 s left, the current code is used.
        assert_eq!(s.current_code(&At(1_000_000_015)), s.code_at(1_000_000_015));
        // 26 s in: 4 s left, the next window's code is used.
        assert_eq!(s.current_code(&At(1_000_000_016)), s.code_at(1_000_000_020));
        assert_eq!(s.current_code(&At(1_000_000_019)), s.code_at(1_000_000_020));
        assert_ne!(s.code_at(1_000_000_019), s.code_at(1_000_000_020));
    }

    #[test]
    fn tracker_never_reuses_a_window() {
        let t = TotpTracker::new();
        let s = TotpSpec::parse("JBSWY3DPEHPK3PXP").expect("seed");
        let clock = At(1_000_000_000); // 10 s into a window (20 s left)
        let first = t.code("JBSWY3DPEHPK3PXP", &clock).expect("first");
        assert_eq!(first, s.code_at(1_000_000_000));
        let second = t.code("JBSWY3DPEHPK3PXP", &clock).expect("second");
        assert_eq!(second, s.code_at(1_000_000_020));
        let third = t
            .code("JBSWY3DPEHPK3PXP", &clock)
            .err()
            .map(|e| e.to_string());
        assert!(
            third.as_deref().is_some_and(|m| m.contains("opens in 20s")),
            "{third:?}"
        );
        // Next window: the step after the last used one.
        let later = At(1_000_000_040);
        let fourth = t.code("JBSWY3DPEHPK3PXP", &later).expect("fourth");
        assert_eq!(fourth, s.code_at(1_000_000_050));
    }

    #[test]
    fn fingerprint_names_the_seed_however_written() {
        let a = TotpSpec::parse("JBSWY3DPEHPK3PXP").expect("seed");
        let b = TotpSpec::parse("jbsw y3dp ehpk 3pxp").expect("seed");
        let c = TotpSpec::parse(
            "otpauth://totp/Acme:ops@example.com?secret=JBSWY3DPEHPK3PXP&issuer=Acme",
        )
        .expect("uri");
        let other = TotpSpec::parse("KRSXG5CTMVRXEZLU").expect("seed");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), c.fingerprint());
        assert_ne!(a.fingerprint(), other.fingerprint());
        assert!(!a.fingerprint().contains("JBSW"));
    }

    #[tokio::test]
    async fn a_reserved_window_is_the_next_code_and_never_handed_out_again() {
        let t = TotpTracker::new();
        let s = TotpSpec::parse("JBSWY3DPEHPK3PXP").expect("seed");
        let clock = At(1_000_000_000); // 10 s into a window
        t.reserve("JBSWY3DPEHPK3PXP", &clock)
            .await
            .expect("reserve");
        assert_eq!(
            t.code("JBSWY3DPEHPK3PXP", &clock).expect("code"),
            s.code_at(1_000_000_000)
        );
        // The next reservation takes the following window, not the same one.
        t.reserve("JBSWY3DPEHPK3PXP", &clock)
            .await
            .expect("reserve");
        assert_eq!(
            t.code("JBSWY3DPEHPK3PXP", &clock).expect("code"),
            s.code_at(1_000_000_020)
        );
        // Without a reservation, `code` goes on from the last window used.
        assert!(t.code("JBSWY3DPEHPK3PXP", &clock).is_err());
    }

    #[tokio::test]
    async fn a_reserved_window_no_code_came_from_is_given_back() {
        let t = TotpTracker::new();
        let s = TotpSpec::parse("JBSWY3DPEHPK3PXP").expect("seed");
        let clock = At(1_000_000_000); // 10 s into a window
        // A sign-in that failed before typing its code: the window is free again.
        t.reserve("JBSWY3DPEHPK3PXP", &clock)
            .await
            .expect("reserve");
        assert!(!t.release_unused("JBSWY3DPEHPK3PXP").await.expect("release"));
        assert_eq!(
            t.wait_for_unused("JBSWY3DPEHPK3PXP", &clock),
            std::time::Duration::ZERO
        );
        t.reserve("JBSWY3DPEHPK3PXP", &clock)
            .await
            .expect("reserve");
        assert_eq!(
            t.code("JBSWY3DPEHPK3PXP", &clock).expect("code"),
            s.code_at(1_000_000_000),
            "the given-back window is the next one used"
        );
        // A window a code was handed out of stays used.
        assert!(t.release_unused("JBSWY3DPEHPK3PXP").await.expect("release"));
        t.reserve("JBSWY3DPEHPK3PXP", &clock)
            .await
            .expect("reserve");
        assert_eq!(
            t.code("JBSWY3DPEHPK3PXP", &clock).expect("code"),
            s.code_at(1_000_000_020)
        );
    }
}
