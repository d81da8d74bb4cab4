//! Format-preserving edits on real-world files (tests/fixtures/edit): only the promoted value's
//! line changes, and only in that value; refused edits name the file and path.

use std::path::Path;

use promote::git::edit::{EditError, Target, apply};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/edit").join(name)).unwrap()
}

/// The lines that differ between two texts of the same line count.
fn changed_lines(before: &str, after: &str) -> Vec<(usize, String, String)> {
    let (b, a): (Vec<&str>, Vec<&str>) = (before.split('\n').collect(), after.split('\n').collect());
    assert_eq!(b.len(), a.len(), "line count changed:\n{after}");
    b.iter().zip(&a).enumerate().filter(|(_, (x, y))| x != y).map(|(i, (x, y))| (i + 1, x.to_string(), y.to_string())).collect()
}

#[test]
fn kustomize_new_tag_changes_only_that_value() {
    let text = fixture("kustomization.yaml");
    let out = apply("kustomization.yaml", &text, Target::KustomizeImage { name: "registry.example.com/acme/checkout", digest: false }, "1.4.2").unwrap();
    assert_eq!(out.old_value.as_deref(), Some("1.4.1"));
    assert_eq!(out.line, 12);
    assert_eq!(changed_lines(&text, &out.text), vec![(12, "    newTag: 1.4.1 # promoted by promote".into(), "    newTag: 1.4.2 # promoted by promote".into())]);
}

#[test]
fn quoting_style_is_kept_and_plain_values_that_would_change_type_are_quoted() {
    let text = fixture("kustomization.yaml");
    let out = apply("k.yaml", &text, Target::KustomizeImage { name: "registry.example.com/acme/cart", digest: false }, "2.0.2").unwrap();
    assert_eq!(changed_lines(&text, &out.text)[0].2, "    newTag: \"2.0.2\"       # pinned until CART-112");

    // `1.10` written plain would be read back as the float 1.1: it gets quotes.
    let out = apply("k.yaml", &text, Target::KustomizeImage { name: "registry.example.com/acme/checkout", digest: false }, "1.10").unwrap();
    assert_eq!(changed_lines(&text, &out.text)[0].2, "    newTag: \"1.10\" # promoted by promote");

    let values = fixture("values.yaml");
    let out = apply("values.yaml", &values, Target::Path("image.tag"), "1.4.2").unwrap();
    assert_eq!(
        changed_lines(&values, &out.text),
        vec![(8, "  tag: '1.4.1'            # single-quoted on purpose".into(), "  tag: '1.4.2'            # single-quoted on purpose".into())]
    );
}

#[test]
fn flow_style_and_nested_paths() {
    let values = fixture("values.yaml");
    let out = apply("values.yaml", &values, Target::Path("sidecar.tag"), "v1.32.0").unwrap();
    assert_eq!(changed_lines(&values, &out.text)[0].2, "sidecar: {image: envoy, tag: \"v1.32.0\", resources: {cpu: 100m}}");
    let out = apply("values.yaml", &values, Target::Path("env[0].value"), "debug").unwrap();
    assert_eq!(changed_lines(&values, &out.text)[0].2, "  - {name: LOG_LEVEL, value: debug}");

    let deploy = fixture("deployment.yaml");
    let path = "spec.template.spec.containers[0].image";
    let out = apply("deployment.yaml", &deploy, Target::Path(path), "registry.example.com/acme/checkout:1.4.2").unwrap();
    assert_eq!(
        changed_lines(&deploy, &out.text),
        vec![(
            13,
            "          image: registry.example.com/acme/checkout:1.4.1   # the release".into(),
            "          image: registry.example.com/acme/checkout:1.4.2   # the release".into()
        )]
    );
    let out = apply("deployment.yaml", &deploy, Target::Path("spec.template.spec.containers[1].image"), "envoyproxy/envoy:v1.32.0").unwrap();
    assert_eq!(changed_lines(&deploy, &out.text)[0].2, "          image: \"envoyproxy/envoy:v1.32.0\"");
}

#[test]
fn an_anchored_value_is_edited_at_its_anchor_but_never_through_an_alias() {
    let values = fixture("values.yaml");
    let out = apply("values.yaml", &values, Target::Path("defaults.tag"), "1.4.2").unwrap();
    assert_eq!(changed_lines(&values, &out.text)[0].2, "  tag: &stable 1.4.2");
    let err = apply("values.yaml", &values, Target::Path("canary.tag"), "1.4.2").unwrap_err();
    assert!(err.to_string().contains("comes from the anchor at line 5"), "{err}");
    // A merged key (`<<: *defaults`) is an alias too.
    let err = apply("values.yaml", &values, Target::Path("image.pullPolicy"), "Always").unwrap_err();
    assert!(matches!(err, EditError::NotEditable { .. }), "{err}");
}

#[test]
fn a_missing_tag_is_added_under_the_entry_name() {
    let text = fixture("kustomization.yaml");
    let out = apply("k.yaml", &text, Target::KustomizeImage { name: "registry.example.com/acme/search", digest: false }, "3.1.0").unwrap();
    assert_eq!(out.old_value, None);
    let lines: Vec<&str> = out.text.lines().collect();
    assert_eq!(lines[14], "  - name: registry.example.com/acme/search");
    assert_eq!(lines[15], "    newTag: 3.1.0");
    assert_eq!(out.text.lines().count(), text.lines().count() + 1);
    let out = apply("k.yaml", &text, Target::KustomizeImage { name: "registry.example.com/acme/payments", digest: true }, "sha256:1111").unwrap();
    assert_eq!(changed_lines(&text, &out.text)[0].2, "    digest: sha256:1111");
}

#[test]
fn refusals_name_the_file_and_path_and_say_why() {
    let values = fixture("values.yaml");
    let cases = [
        (Target::Path("image.digest"), "values.yaml:7: path `image.digest` not found: `image.digest` does not exist"),
        (Target::Path("image"), "values.yaml:7: `image` cannot be edited: it is a mapping, not a single value"),
        (Target::Path("replicaCount.x"), "`replicaCount` is a scalar, not a mapping"),
        (Target::Path("env[5].value"), "`env[5]` does not exist"),
        (Target::Path("description"), "it is a multi-line value"),
        (Target::Path("env[1].value"), "it is a multi-line value"),
        (Target::Path("image..tag"), "values.yaml: malformed path `image..tag`: it has an empty key"),
        (Target::KustomizeImage { name: "x", digest: false }, "the file has no `images:` list"),
    ];
    for (target, expected) in cases {
        let err = apply("values.yaml", &values, target, "1.4.2").unwrap_err().to_string();
        assert!(err.contains(expected), "{target:?}: {err}");
    }
    let k = fixture("kustomization.yaml");
    let err = apply("k.yaml", &k, Target::KustomizeImage { name: "registry.example.com/acme/chekout", digest: false }, "1").unwrap_err().to_string();
    assert!(
        err.contains(
            "no `images` entry is named `registry.example.com/acme/chekout` (entries: registry.example.com/acme/cart, registry.example.com/acme/checkout"
        ),
        "{err}"
    );
    let err = apply("notes.txt", "key: [unclosed\n", Target::Path("key"), "1").unwrap_err().to_string();
    assert!(err.starts_with("notes.txt:"), "{err}");
    assert!(err.contains("not a YAML document promote can edit"), "{err}");
}

#[test]
fn applying_the_value_already_there_changes_nothing() {
    let deploy = fixture("deployment.yaml");
    let v = "registry.example.com/acme/checkout:1.4.1";
    let out = apply("deployment.yaml", &deploy, Target::Path("spec.template.spec.containers[0].image"), v).unwrap();
    assert_eq!(out.old_value.as_deref(), Some(v));
    assert_eq!(out.text, deploy);
}

#[test]
fn a_file_of_several_documents_edits_the_one_that_has_the_path() {
    let text = fixture("manifests.yaml");
    let image = Target::Path("spec.template.spec.containers[0].image");
    let out = apply("manifests.yaml", &text, image, "registry.example.com/acme/checkout:1.4.2").unwrap();
    assert_eq!(out.line, 19);
    assert_eq!(
        changed_lines(&text, &out.text),
        vec![(
            19,
            "          image: registry.example.com/acme/checkout:1.4.1   # the release".into(),
            "          image: registry.example.com/acme/checkout:1.4.2   # the release".into()
        )]
    );
    assert_eq!(promote::git::edit::read("manifests.yaml", &out.text, image).unwrap().as_deref(), Some("registry.example.com/acme/checkout:1.4.2"));

    // In two documents: refused, naming them. In none: says so, with the first document's reason.
    let e = apply("manifests.yaml", &text, Target::Path("metadata.name"), "x").unwrap_err();
    assert_eq!(
        e.to_string(),
        "manifests.yaml:13: `metadata.name` cannot be edited: it exists in documents 1, 2, 3 of the file (lines 6, 13, 25); promote writes one value, so give each its own file or a more specific path"
    );
    let e = apply("manifests.yaml", &text, Target::Path("spec.replicas"), "3").unwrap_err();
    assert_eq!(
        e.to_string(),
        "manifests.yaml:8: path `spec.replicas` not found: in none of the 3 documents (`spec.replicas` does not exist in the first) (check the environment's `update` in the pipeline)"
    );
}

#[test]
fn an_empty_value_gets_the_new_one_after_its_colon() {
    // As a well-known community chart ships it: `tag:` with no value.
    for (before, after) in [
        ("image:\n  repository: acme/app\n  tag:\n  pullPolicy: IfNotPresent\n", "image:\n  repository: acme/app\n  tag: 9.9.9\n  pullPolicy: IfNotPresent\n"),
        ("image:\n  tag: # set by CI\n", "image:\n  tag: 9.9.9 # set by CI\n"),
        ("image: {tag: , repository: acme/app}\n", "image: {tag: 9.9.9, repository: acme/app}\n"),
        ("image:\n  tag:", "image:\n  tag: 9.9.9"),
    ] {
        let edited = apply("values.yaml", before, Target::Path("image.tag"), "9.9.9").unwrap();
        assert_eq!(edited.text, after, "from {before:?}");
        // And it reads back.
        assert_eq!(promote::git::edit::read("values.yaml", &edited.text, Target::Path("image.tag")).unwrap().as_deref(), Some("9.9.9"));
    }
}

#[test]
fn a_new_tag_beside_a_digest_is_refused_naming_the_digest() {
    let text = "images:\n  - name: registry.example.com/acme/checkout\n    newTag: 1.0.0\n    digest: sha256:0123abcd\n";
    let target = Target::KustomizeImage { name: "registry.example.com/acme/checkout", digest: false };
    let err = apply("kustomization.yaml", text, target, "9.9.9").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("kustomization.yaml:4: ") && msg.contains("digest: sha256:0123abcd"), "{msg}");
    // Promoting digests there still works.
    let target = Target::KustomizeImage { name: "registry.example.com/acme/checkout", digest: true };
    let edited = apply("kustomization.yaml", text, target, "sha256:ffff").unwrap();
    assert!(edited.text.contains("digest: sha256:ffff"), "{}", edited.text);
}

#[test]
fn empty_and_comment_only_documents_are_skipped_as_helm_template_writes_them() {
    // `helm template` writes a `---` and a `# Source:` comment before each manifest; an empty
    // document between two markers is common in generated files.
    let text = "---\n---\n# Source: checkout/templates/deployment.yaml\n---\nimage:\n  repository: acme/checkout\n  tag: 1.4.1\n---\n# Source: checkout/templates/notes.txt\n";
    let out = apply("rendered.yaml", text, Target::Path("image.tag"), "1.4.2").unwrap();
    assert_eq!(out.old_value.as_deref(), Some("1.4.1"));
    assert_eq!(out.line, 7);
    assert_eq!(changed_lines(text, &out.text), vec![(7, "  tag: 1.4.1".into(), "  tag: 1.4.2".into())]);

    // Two documents holding the target: refused, naming both documents and their lines.
    let two = "image:\n  tag: 1.0.0\n---\n# Source: x\n---\nimage:\n  tag: 1.0.0\n";
    let err = apply("two.yaml", two, Target::Path("image.tag"), "1.4.2").unwrap_err().to_string();
    assert!(err.contains("documents 1, 3") && err.contains("lines 2, 7"), "{err}");
    // A file with no document at all says so instead of talking about pipelines.
    let err = apply("blank.yaml", "# nothing here\n", Target::Path("image.tag"), "1.4.2").unwrap_err().to_string();
    assert!(err.contains("holds no YAML document"), "{err}");
}

#[test]
fn a_byte_order_mark_and_crlf_line_endings_are_kept() {
    let text =
        "\u{feff}# Default values for checkout.\r\n# This is a YAML-formatted file.\r\n---\r\nimage:\r\n  repository: acme/checkout\r\n  tag: \"1.4.1\"\r\n";
    let out = apply("values.yaml", text, Target::Path("image.tag"), "1.4.2").unwrap();
    assert_eq!(out.text, text.replace("1.4.1", "1.4.2"));
    assert_eq!(out.line, 6);

    // A kustomize entry that has no newTag yet gets a CRLF line like its neighbours.
    let k = "\u{feff}images:\r\n  - name: acme/checkout\r\n  - name: acme/cart\r\n    newTag: 2.0.0\r\n";
    let out = apply("kustomization.yaml", k, Target::KustomizeImage { name: "acme/checkout", digest: false }, "1.4.2").unwrap();
    assert_eq!(out.text, "\u{feff}images:\r\n  - name: acme/checkout\r\n    newTag: 1.4.2\r\n  - name: acme/cart\r\n    newTag: 2.0.0\r\n");
    assert!(!out.text.replace("\r\n", "").contains('\n'), "every line ends in CRLF");
}

#[test]
fn standard_tags_elsewhere_are_accepted_and_a_tagged_target_is_refused() {
    let text = "replicaCount: !!int 3\nresources: !!map {}\nimage:\n  tag: 1.4.1\n  pullSecrets: !!seq []\n  debug: !!bool false\n";
    let out = apply("values.yaml", text, Target::Path("image.tag"), "1.4.2").unwrap();
    assert_eq!(changed_lines(text, &out.text), vec![(4, "  tag: 1.4.1".into(), "  tag: 1.4.2".into())]);

    let tagged = "image:\n  tag: !!float 1.4\n";
    let err = apply("values.yaml", tagged, Target::Path("image.tag"), "1.4.2").unwrap_err();
    assert!(matches!(&err, EditError::NotEditable { line: 2, why, .. } if why.contains("!!float")), "{err}");
    // `!!str` on the target is a string already: edited.
    let out = apply("values.yaml", "image:\n  tag: !!str 1.4\n", Target::Path("image.tag"), "1.4.2").unwrap();
    assert_eq!(out.text, "image:\n  tag: !!str 1.4.2\n");
}
