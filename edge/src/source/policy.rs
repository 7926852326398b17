//! What a source does with frames the run loop has not taken yet: keep every one, or only the
//! newest (`[source] policy`, `edge run --policy`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SourceSpec;

/// The frame policy of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FramePolicy {
    /// The classifier always takes the newest complete frame; a frame still waiting when a newer
    /// one arrives is dropped and counted. Results never trail the field of view by more than
    /// one frame. Cameras always; `stdin` from a live camera pipeline (`rpicam-vid`, GStreamer).
    Latest,
    /// Every frame is classified: the source waits while two frames are waiting (a pipe writer is
    /// held back by the kernel). Files, watched folders, and `stdin` by default.
    All,
}

impl FramePolicy {
    /// The policy a source gets when none is configured: `latest` for a camera, `all` for the
    /// others.
    pub fn default_for(spec: &SourceSpec) -> FramePolicy {
        match spec {
            SourceSpec::V4l2 { .. } => FramePolicy::Latest,
            _ => FramePolicy::All,
        }
    }

    /// Whether `spec` can follow this policy: `latest` on files or a watched folder (finite
    /// lists of pictures, each to be classified) and `all` on a camera (a queue of stale frames
    /// behind a slow model) are refused, with the reason.
    pub fn check(self, spec: &SourceSpec) -> Result<(), String> {
        match (spec, self) {
            (SourceSpec::Files(_) | SourceSpec::Watch { .. }, FramePolicy::Latest) => Err(format!(
                "policy = \"latest\" is for live streams (stdin from a camera pipeline, a camera); \
                 {spec} is a list of pictures, each of which is classified (policy = \"all\")"
            )),
            (SourceSpec::V4l2 { .. }, FramePolicy::All) => Err(format!(
                "policy = \"all\" would queue stale frames behind the model; a camera ({spec}) \
                 always delivers the newest frame (policy = \"latest\")"
            )),
            _ => Ok(()),
        }
    }

    /// The word used in the config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FramePolicy::Latest => "latest",
            FramePolicy::All => "all",
        }
    }
}

impl fmt::Display for FramePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FramePolicy {
    type Err = String;

    /// `latest` or `all`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(FramePolicy::Latest),
            "all" => Ok(FramePolicy::All),
            other => Err(format!("policy must be latest or all, got {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals_follow_the_source() {
        let camera: SourceSpec = "v4l2:/dev/video0".parse().unwrap();
        let stdin: SourceSpec = "-".parse().unwrap();
        let files: SourceSpec = "pictures".parse().unwrap();
        let watch: SourceSpec = "watch:in".parse().unwrap();
        assert_eq!(FramePolicy::default_for(&camera), FramePolicy::Latest);
        for s in [&stdin, &files, &watch] {
            assert_eq!(FramePolicy::default_for(s), FramePolicy::All);
        }
        assert!(FramePolicy::Latest.check(&stdin).is_ok());
        assert!(FramePolicy::All.check(&stdin).is_ok());
        assert!(FramePolicy::Latest.check(&camera).is_ok());
        let e = FramePolicy::Latest.check(&watch).unwrap_err();
        assert!(e.contains("watch:in") && e.contains("\"all\""), "{e}");
        assert!(FramePolicy::Latest.check(&files).is_err());
        assert!(
            FramePolicy::All
                .check(&camera)
                .unwrap_err()
                .contains("newest")
        );
        assert_eq!("latest".parse::<FramePolicy>(), Ok(FramePolicy::Latest));
        assert!("newest".parse::<FramePolicy>().is_err());
    }
}
