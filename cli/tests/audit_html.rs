//! `lockstep audit history --format html` in a real browser (issue 16): five
//! `audit --once` runs on real servers (consistent; two keys corrupted on the target;
//! again; one repaired; again), the page written by the binary, then headless
//! Chromium screenshots it and dumps its DOM.
//!
//! The oracle is the screenshot's pixels: each chart's frame is found by its border
//! colour, and inside it the line must be drawn in its series colour across most of
//! the plot's width (only a drawn polyline gives that), the differences line must
//! rise (0 then 2 then 1 differences), the keys-compared line must be flat, and there
//! must be one dot per run in its verdict's colour. The same check must refuse the
//! page without its SVG, the page with dots but no line, and a page with no run, so
//! the check can fail. The DOM must list the persistent key; the page must name no
//! external resource (the browser is also given no network).
//!
//! Without a Chromium (LOCKSTEP_CHROMIUM, or `chromium` / `chromium-browser` on PATH)
//! the test fails, saying to run scripts/install-browser.sh; LOCKSTEP_SKIP_BROWSER=1
//! skips it explicitly. The screenshots are kept in the target's tmp folder
//! (`audit_html/`) to be looked at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_testkit::{Auth, RedisServer, RedisVersion, Run, ServerConfig};

const PASSWORD: &str = "lockstep-test-pass";

// The page's colours, as cli/src/audit/html.rs defines them (checked below to be in
// the page, so a change there fails here with a clear message).
const DIFFERENCES_SERIES: Rgb = Rgb(0x7b, 0x1f, 0xa2);
const COVERAGE_SERIES: Rgb = Rgb(0x00, 0x83, 0x8f);
const CONSISTENT_DOT: Rgb = Rgb(0x22, 0xaa, 0x22);
const DIFFERENCES_DOT: Rgb = Rgb(0xdd, 0x22, 0x22);
const CHART_BORDER: Rgb = Rgb(0xdd, 0xdd, 0xdd);
/// The plot's width inside a chart (html.rs: WIDTH - 2 * MARGIN).
const PLOT_WIDTH: usize = 560;

#[derive(Clone, Copy, PartialEq, Debug)]
struct Rgb(u8, u8, u8);

impl Rgb {
    fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
    fn near(self, other: Rgb, tolerance: u8) -> bool {
        self.0.abs_diff(other.0) <= tolerance
            && self.1.abs_diff(other.1) <= tolerance
            && self.2.abs_diff(other.2) <= tolerance
    }
}

/// `lockstep <args>`: exit code and stdout, stderr.
fn lockstep(args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The Chromium to drive, or None when LOCKSTEP_SKIP_BROWSER=1 says to skip; panics
/// (the test fails) when there is none.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LOCKSTEP_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "LOCKSTEP_CHROMIUM={} is not a file: point it at a chromium binary, or unset it \
             and run scripts/install-browser.sh",
            path.display()
        );
        return Some(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    });
    if on_path.is_none() && std::env::var("LOCKSTEP_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!(
            "audit_html: SKIPPED (LOCKSTEP_SKIP_BROWSER=1): the page is not checked in a browser"
        );
        return None;
    }
    assert!(
        on_path.is_some(),
        "no chromium found (LOCKSTEP_CHROMIUM, or chromium / chromium-browser on PATH): \
         run scripts/install-browser.sh, or set LOCKSTEP_SKIP_BROWSER=1 to skip this test"
    );
    on_path
}

/// Runs headless Chromium on `page` with `args`, without network, within 60 s; stdout.
fn browse(browser: &Path, page: &Path, args: &[String]) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let out = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(out.reopen()?)
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("{} did not finish within 60 s", browser.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    anyhow::ensure!(status.success(), "{} exited {status}", browser.display());
    Ok(std::fs::read_to_string(out.path())?)
}

struct Image {
    width: usize,
    height: usize,
    pixels: Vec<Rgb>,
}

impl Image {
    fn at(&self, x: usize, y: usize) -> Rgb {
        self.pixels[y * self.width + x]
    }
}

/// The screenshot of `page` at 1200x1600, decoded; kept as `keep` in the target's tmp.
fn screenshot(browser: &Path, page: &Path, keep: &str) -> anyhow::Result<Image> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit_html");
    std::fs::create_dir_all(&dir)?;
    let png_path = dir.join(keep);
    let _ = std::fs::remove_file(&png_path);
    browse(
        browser,
        page,
        &[
            format!("--screenshot={}", png_path.display()),
            "--window-size=1200,1600".into(),
        ],
    )?;
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path)?));
    let mut reader = decoder.read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buffer)?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => anyhow::bail!(
            "{}: unexpected PNG colour type {other:?}",
            png_path.display()
        ),
    };
    anyhow::ensure!(
        info.bit_depth == png::BitDepth::Eight,
        "{}: not 8-bit",
        png_path.display()
    );
    let (width, height) = (info.width as usize, info.height as usize);
    let pixels = buffer[..width * height * channels]
        .chunks_exact(channels)
        .map(|p| Rgb(p[0], p[1], p[2]))
        .collect();
    Ok(Image {
        width,
        height,
        pixels,
    })
}

/// A chart's frame in the screenshot: inclusive border rows and columns.
#[derive(Debug, Clone, Copy)]
struct Frame {
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
}

/// The charts' frames, top to bottom: rows holding a run of >= 600 border pixels are
/// a frame's top or bottom, paired in order, and the frame's sides must be border too.
fn frames(image: &Image) -> Vec<Frame> {
    let mut rows = Vec::new();
    for y in 0..image.height {
        let mut run = 0;
        for x in 0..image.width {
            run = if image.at(x, y) == CHART_BORDER {
                run + 1
            } else {
                0
            };
            if run == 600 {
                let left = x + 1 - run;
                let right = (x..image.width)
                    .take_while(|&x| image.at(x, y) == CHART_BORDER)
                    .last()
                    .unwrap_or(x);
                rows.push((y, left, right));
                break;
            }
        }
    }
    rows.chunks_exact(2)
        .map(|pair| Frame {
            top: pair[0].0,
            bottom: pair[1].0,
            left: pair[0].1,
            right: pair[0].2,
        })
        .filter(|f| {
            f.bottom > f.top + 20
                && (f.top..=f.bottom).all(|y| {
                    image.at(f.left, y) == CHART_BORDER && image.at(f.right, y) == CHART_BORDER
                })
        })
        .collect()
}

/// What of `colour` is inside `frame`: distinct columns, rows spanned,
/// and connected blobs (4-neighbour) of at least 12 pixels.
#[derive(Debug, Default)]
struct Seen {
    columns: usize,
    rows: usize,
    blobs: usize,
}

fn seen(image: &Image, frame: Frame, colour: Rgb, tolerance: u8) -> Seen {
    let (x0, y0) = (frame.left + 1, frame.top + 1);
    let (w, h) = (frame.right - x0, frame.bottom - y0);
    let mask: Vec<bool> = (0..w * h)
        .map(|i| image.at(x0 + i % w, y0 + i / w).near(colour, tolerance))
        .collect();
    let mut result = Seen {
        columns: (0..w).filter(|&x| (0..h).any(|y| mask[y * w + x])).count(),
        ..Seen::default()
    };
    let ys: Vec<usize> = (0..h)
        .filter(|&y| (0..w).any(|x| mask[y * w + x]))
        .collect();
    result.rows = match (ys.first(), ys.last()) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    };
    let mut visited = vec![false; w * h];
    for start in 0..w * h {
        if !mask[start] || visited[start] {
            continue;
        }
        let (mut size, mut stack) = (0, vec![start]);
        visited[start] = true;
        while let Some(i) = stack.pop() {
            size += 1;
            let (x, y) = (i % w, i / w);
            let mut next = Vec::with_capacity(4);
            if x > 0 {
                next.push(i - 1);
            }
            if x + 1 < w {
                next.push(i + 1);
            }
            if y > 0 {
                next.push(i - w);
            }
            if y + 1 < h {
                next.push(i + w);
            }
            for n in next {
                if mask[n] && !visited[n] {
                    visited[n] = true;
                    stack.push(n);
                }
            }
        }
        if size >= 12 {
            result.blobs += 1;
        }
    }
    result
}

/// The chart check: two frames (differences, then keys compared), each with its line
/// drawn over most of the plot's width, the differences line rising, the coverage
/// line flat, and a dot per run: `consistent` green and `differing` red ones.
fn charts_drawn(image: &Image, consistent: usize, differing: usize) -> Result<String, String> {
    let frames = frames(image);
    let [differences, coverage] = frames[..] else {
        return Err(format!(
            "expected 2 chart frames, found {}: {frames:?}",
            frames.len()
        ));
    };
    let mut report = String::new();
    for (name, frame, series, rising) in [
        ("differences", differences, DIFFERENCES_SERIES, true),
        ("keys compared", coverage, COVERAGE_SERIES, false),
    ] {
        let line = seen(image, frame, series, 40);
        let green = seen(image, frame, CONSISTENT_DOT, 40);
        let red = seen(image, frame, DIFFERENCES_DOT, 40);
        report += &format!("{name}: {frame:?} line {line:?} green {green:?} red {red:?}\n");
        if line.columns < PLOT_WIDTH * 3 / 4 {
            return Err(format!(
                "{name}: its line is in {} columns, fewer than 3/4 of the plot's {PLOT_WIDTH}\n{report}",
                line.columns
            ));
        }
        if rising && line.rows < 60 {
            return Err(format!(
                "{name}: the line spans {} rows; it should rise by ~120\n{report}",
                line.rows
            ));
        }
        if !rising && line.rows > 8 {
            return Err(format!(
                "{name}: the line spans {} rows; it should be flat\n{report}",
                line.rows
            ));
        }
        if (green.blobs, red.blobs) != (consistent, differing) {
            return Err(format!(
                "{name}: {} green and {} red dots, expected {consistent} and {differing}\n{report}",
                green.blobs, red.blobs
            ));
        }
    }
    Ok(report)
}

/// A source and a password-protected target holding the same 200 keys.
async fn equal_pair() -> anyhow::Result<(RedisServer, RedisServer)> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target =
        RedisServer::start(ServerConfig::new(RedisVersion::V8_2).auth(Auth::password())).await?;
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
    }
    pipe.query_async::<()>(&mut source.client().await?).await?;
    pipe.query_async::<()>(&mut target.client().await?).await?;
    Ok((source, target))
}

/// Everything between `<svg` and `</svg>` (or `<polyline` and `/>`) cut out.
fn without(html: &str, open: &str, close: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find(open) {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .find(close)
            .map_or("", |end| &rest[start + end + close.len()..]);
    }
    out + rest
}

#[tokio::test]
async fn the_html_page_draws_its_charts_in_a_browser_and_lists_the_persistent_key(
) -> anyhow::Result<()> {
    let Some(browser) = chromium() else {
        return Ok(());
    };
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("pass"), format!("{PASSWORD}\n"))?;
    let config = dir.path().join("audits.toml");
    std::fs::write(
        &config,
        format!(
            "history = \"history.db\"\n[[pair]]\nname = \"orders\"\nsource = \"{}\"\n\
             target = \"redis://127.0.0.1:{}\"\ntarget_password_file = \"pass\"\ninterval_secs = 1\n",
            source.url(),
            target.port()
        ),
    )?;
    let config_arg = config.to_string_lossy().into_owned();
    let html_of = |config: &str, pair: &[&str]| -> anyhow::Result<String> {
        let mut args = vec!["audit", "history", "--config", config, "--format", "html"];
        args.extend(pair);
        let (code, html, err) = lockstep(&args)?;
        anyhow::ensure!(code == Some(0), "audit history --format html: {err}");
        Ok(html)
    };

    let mut target_client = target.client().await?;
    let steps: [(&[&str], i32); 5] = [
        (&[], 0),
        (&["SET user:3 corrupt", "SET user:7 corrupt"], 1),
        (&[], 1),
        (&["SET user:3 3"], 1),
        (&[], 1),
    ];
    for (commands, expected) in steps {
        for command in commands {
            target_client.run::<()>(command).await?;
        }
        let (code, out, err) = lockstep(&["audit", "--config", &config_arg, "--once"])?;
        assert_eq!(code, Some(expected), "{out}{err}");
        // Runs spread in time, so that no two dots of a chart touch.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let html = html_of(&config_arg, &[])?;
    // The page of a pair with no run, over the same history.
    let idle = dir.path().join("idle.toml");
    std::fs::write(
        &idle,
        "history = \"history.db\"\n[[pair]]\nname = \"idle\"\nsource = \"redis://127.0.0.1:1\"\n\
         target = \"redis://127.0.0.1:2\"\ninterval_secs = 1\n",
    )?;
    let no_runs = html_of(&idle.to_string_lossy(), &["--pair", "idle"])?;
    assert!(no_runs.contains("No audit recorded yet"), "{no_runs}");
    for colour in [
        DIFFERENCES_SERIES,
        COVERAGE_SERIES,
        CONSISTENT_DOT,
        DIFFERENCES_DOT,
        CHART_BORDER,
    ] {
        assert!(
            html.contains(&colour.hex()),
            "the page does not use {}: keep this test's colours equal to cli/src/audit/html.rs's",
            colour.hex()
        );
    }
    for external in ["http://", "https://", "src=", "href=", "url(", "@import"] {
        assert!(
            !html.contains(external),
            "the page names an external resource ({external}):\n{html}"
        );
    }

    let page = dir.path().join("audit.html");
    std::fs::write(&page, &html)?;
    let image = screenshot(&browser, &page, "audit.png")?;
    assert_eq!((image.width, image.height), (1200, 1600));
    let report = charts_drawn(&image, 1, 4)
        .unwrap_or_else(|why| panic!("the charts are not drawn as expected: {why}"));
    eprintln!("{report}");

    let dom = browse(&browser, &page, &["--dump-dom".into()])?;
    assert!(
        dom.contains("<tr class=\"persistent\"><td>persistent</td><td>0</td><td>user:7</td>"),
        "the persistent key is not listed in the rendered page:\n{dom}"
    );
    assert!(
        !dom.contains("user:3<"),
        "the repaired key is still listed:\n{dom}"
    );
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), 2, "{dom}");

    // The check can fail: not without the charts, nor with dots but no line, nor on
    // the page of no run.
    for (name, broken) in [
        ("no-svg.png", without(&html, "<svg", "</svg>")),
        ("no-line.png", without(&html, "<polyline", "/>")),
        ("no-runs.png", no_runs),
    ] {
        let path = dir.path().join(name.replace(".png", ".html"));
        std::fs::write(&path, &broken)?;
        let image = screenshot(&browser, &path, name)?;
        let verdict = charts_drawn(&image, 1, 4);
        eprintln!("{name}: refused as expected: {:?}", verdict.as_ref().err());
        assert!(
            verdict.is_err(),
            "{name}: the check passed a page without a drawn chart: {verdict:?}"
        );
    }
    Ok(())
}
