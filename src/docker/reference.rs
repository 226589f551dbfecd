//! Image references as the Engine API takes them apart.

/// `repo:tag` → (`repo`, `tag`); `repo@sha256:…` → (`repo@sha256:…`, ""); `repo` →
/// (`repo`, `latest`). A registry port (`host:5000/repo`) is not a tag.
pub fn split_reference(reference: &str) -> (&str, &str) {
    if reference.contains('@') {
        return (reference, "");
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("127.0.0.1:5000/team/app"),
            ("127.0.0.1:5000/team/app", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/team/app:v2"),
            ("127.0.0.1:5000/team/app", "v2")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", ""));
    }
}
