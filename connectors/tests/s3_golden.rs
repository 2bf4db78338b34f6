//! Golden tests of the CloudEvents AWS S3 mapping: every sample notification in `testdata/s3/` maps
//! to the CloudEvents in `testdata/s3/golden/<name>.events.json` (regenerate with `UPDATE_GOLDEN=1`).

use std::path::PathBuf;

use switchyard_connectors::s3::binding::{self, Notification};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/s3")
}

#[test]
fn samples_map_to_golden_events() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "samples missing: {names:?}");
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    for name in names {
        let body = std::fs::read(dir().join(&name)).unwrap();
        let events = match binding::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}")) {
            Notification::Test => serde_json::json!("s3:TestEvent"),
            Notification::Events(events) => {
                for e in &events {
                    e.validate().unwrap_or_else(|err| panic!("{name}: {err}"));
                }
                serde_json::Value::Array(events.iter().map(|e| e.to_json_value()).collect())
            }
        };
        let golden = dir().join("golden").join(name.replace(".json", ".events.json"));
        if update {
            std::fs::write(&golden, serde_json::to_string_pretty(&events).unwrap() + "\n").unwrap();
            continue;
        }
        let want: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&golden)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 and review)", golden.display())),
        )
        .unwrap();
        assert_eq!(events, want, "{name} differs from {}", golden.display());
    }
}

#[test]
fn keys_with_spaces_plus_slash_and_non_ascii_decode() {
    let cases = [
        ("minio-put.json", "scans/page 1+2 ü.png"),
        ("moto-put.json", "dir/a b+c/Zoë.txt"),
        ("aws-put.json", "holiday 2024/beach & sun/Zoë+1.jpg"),
    ];
    for (file, key) in cases {
        let Notification::Events(events) = binding::parse(&std::fs::read(dir().join(file)).unwrap()).unwrap() else {
            panic!("{file}")
        };
        assert_eq!(events[0].subject.as_deref(), Some(key), "{file}");
    }
}

#[test]
fn adapter_attributes() {
    let Notification::Events(events) = binding::parse(&std::fs::read(dir().join("aws-put.json")).unwrap()).unwrap()
    else {
        panic!()
    };
    let e = &events[0];
    assert_eq!(e.ty, "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(e.source, "aws:s3.eu-west-1.photos-eu");
    assert_eq!(e.id, "7G4V2Q9XK1MZ0ABC.Xb4cVv8Jt0r3F1mO2pQ7hD9sLkA5eR6yZ1wU3iN8gT0=");
    assert_eq!(e.time.unwrap().to_rfc3339(), "2024-05-01T10:15:30.123+00:00");
    let Notification::Events(events) =
        binding::parse(&std::fs::read(dir().join("minio-delete.json")).unwrap()).unwrap()
    else {
        panic!()
    };
    assert_eq!(events[0].ty, "com.amazonaws.s3.ObjectRemoved:Delete", "s3: prefix stripped");
    assert_eq!(events[0].source, "minio:s3..incoming", "empty region kept, as the adapter concatenates");
}
