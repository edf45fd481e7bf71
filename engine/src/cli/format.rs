//! Docker's `--format`: a Go template (gtmpl) per row or object, `table` for a header and
//! aligned columns, `json` for `{{json .}}`.

use super::table::align;
use super::Failure;
use gtmpl::{Context, FuncError, Template, Value};
use serde_json::{Map, Value as Json};

/// A parsed `--format`.
pub struct Format {
    template: Template,
    table: bool,
}

impl Format {
    /// Parses Docker's forms: `json`, `table TEMPLATE`, or a template; `\t` and `\n` written
    /// out in the argument mean a tab and a newline, as in Docker.
    pub fn parse(text: &str) -> Result<Format, Failure> {
        let (table, body) = match text.trim().strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim())
            }
            _ if text.trim() == "json" => (false, "{{json .}}"),
            _ => (false, text.trim()),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut template = Template::default();
        template.add_funcs(FUNCTIONS);
        template
            .parse(body)
            .map_err(|e| bad_format(text, &e.to_string()))?;
        Ok(Format { template, table })
    }

    /// The text for one object, with no newline added.
    pub fn render(&self, value: &Json) -> Result<String, Failure> {
        self.template
            .render(&Context::from(to_template(value)))
            .map_err(|e| Failure::runtime(anyhow::anyhow!("formatting with --format: {e}")))
    }

    /// Rows of a listing, one line each; with `table`, a header made from `fields` (Docker's
    /// field name, column title) first and the columns aligned. A field the listing does not
    /// have is an error, as in Docker, not `<no value>`.
    pub fn render_rows(
        &self,
        fields: &[(&str, &str)],
        rows: &[Map<String, Json>],
    ) -> Result<String, Failure> {
        let titles: Map<String, Json> = fields
            .iter()
            .map(|(field, title)| (field.to_string(), Json::from(*title)))
            .collect();
        // The titles stand in for the values: a field the listing lacks shows as `<no value>`;
        // a function that cannot take a title fails here only where the header is printed.
        let header = match self.render(&Json::Object(titles)) {
            Err(failure) if self.table => return Err(failure),
            rendered => rendered.unwrap_or_default(),
        };
        if header.contains("<no value>") {
            let names: Vec<&str> = fields.iter().map(|(field, _)| *field).collect();
            return Err(Failure::runtime(anyhow::anyhow!(
                "--format names a field this listing does not have; its fields are {}",
                names.join(", ")
            )));
        }
        let mut text = String::new();
        if self.table {
            text.push_str(&header);
            text.push('\n');
        }
        for row in rows {
            text.push_str(&self.render(&Json::Object(row.clone()))?);
            text.push('\n');
        }
        Ok(if self.table { align(&text) } else { text })
    }
}

/// A row of text fields, Docker's field names to their text.
pub fn text_fields<const N: usize>(fields: [(&str, String); N]) -> Map<String, Json> {
    fields
        .into_iter()
        .map(|(name, text)| (name.to_string(), Json::String(text)))
        .collect()
}

fn bad_format(text: &str, why: &str) -> Failure {
    // The parser names the character it stopped at, which may be an invisible one.
    let why: String = why.chars().filter(|c| !c.is_control()).collect();
    Failure::runtime(anyhow::anyhow!("invalid --format `{text}`: {why}"))
}

/// Docker's template functions beside Go's own.
const FUNCTIONS: &[(&str, gtmpl::Func)] = &[
    ("json", json),
    ("join", join),
    ("split", split),
    ("lower", |a| map_text("lower", a, |s| s.to_lowercase())),
    ("upper", |a| map_text("upper", a, |s| s.to_uppercase())),
    ("title", |a| map_text("title", a, title_case)),
    ("truncate", truncate),
    ("pad", pad),
];

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let [value] = args else {
        return Err(FuncError::ExactlyXArgs("json".into(), 1));
    };
    let text = serde_json::to_string(&from_template(value)).map_err(anyhow::Error::from)?;
    Ok(Value::String(text))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::Array(items), Value::String(separator)] = args else {
        return Err(FuncError::Generic(
            "join takes a list and a separator".into(),
        ));
    };
    let texts: Vec<String> = items.iter().map(|v| v.to_string()).collect();
    Ok(Value::String(texts.join(separator)))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::String(text), Value::String(separator)] = args else {
        return Err(FuncError::Generic(
            "split takes a text and a separator".into(),
        ));
    };
    Ok(Value::Array(
        text.split(separator.as_str()).map(Value::from).collect(),
    ))
}

fn map_text(name: &str, args: &[Value], change: fn(&str) -> String) -> Result<Value, FuncError> {
    match args {
        [Value::String(text)] => Ok(Value::String(change(text))),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn title_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        out.extend(if start {
            c.to_uppercase().collect::<Vec<_>>()
        } else {
            vec![c]
        });
        start = !c.is_alphanumeric();
    }
    out
}

fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::String(text), Value::Number(length)] = args else {
        return Err(FuncError::Generic(
            "truncate takes a text and a length".into(),
        ));
    };
    let length = length.as_u64().unwrap_or(0) as usize;
    Ok(Value::String(text.chars().take(length).collect()))
}

fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::String(text), Value::Number(before), Value::Number(after)] = args else {
        return Err(FuncError::Generic(
            "pad takes a text and two lengths".into(),
        ));
    };
    let spaces = |n: &gtmpl_value::Number| " ".repeat(n.as_u64().unwrap_or(0) as usize);
    Ok(Value::String(format!(
        "{}{text}{}",
        spaces(before),
        spaces(after)
    )))
}

fn to_template(value: &Json) -> Value {
    match value {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (_, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(to_template).collect()),
        Json::Object(fields) => Value::Map(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect(),
        ),
    }
}

fn from_template(value: &Value) -> Json {
    match value {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Json::from(i),
            (_, Some(u), _) => Json::from(u),
            (_, _, f) => Json::from(f.unwrap_or_default()),
        },
        Value::Array(items) => Json::Array(items.iter().map(from_template).collect()),
        // serde_json's map sorts its keys, as Go's encoder does.
        Value::Map(fields) | Value::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), from_template(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Map<String, Json>> {
        let row =
            serde_json::json!({"ID": "0123456789ab", "Names": "web-1", "Labels": "tier=front"});
        vec![row.as_object().unwrap().clone()]
    }

    const FIELDS: &[(&str, &str)] = &[
        ("ID", "CONTAINER ID"),
        ("Names", "NAMES"),
        ("Labels", "LABELS"),
    ];

    #[test]
    fn templates_tables_and_json_render_like_docker() {
        let plain = Format::parse("{{.Names}}: {{upper .Labels}}").unwrap();
        assert_eq!(
            plain.render_rows(FIELDS, &rows()).unwrap(),
            "web-1: TIER=FRONT\n"
        );
        let table = Format::parse("table {{.ID}}\\t{{.Names}}").unwrap();
        assert_eq!(
            table.render_rows(FIELDS, &rows()).unwrap(),
            "CONTAINER ID   NAMES\n0123456789ab   web-1\n"
        );
        let json = Format::parse("json").unwrap();
        assert_eq!(
            json.render_rows(FIELDS, &rows()).unwrap(),
            "{\"ID\":\"0123456789ab\",\"Labels\":\"tier=front\",\"Names\":\"web-1\"}\n"
        );
        let split = Format::parse("{{index (split .Labels \"=\") 1}}").unwrap();
        assert_eq!(split.render_rows(FIELDS, &rows()).unwrap(), "front\n");
    }

    #[test]
    fn unknown_fields_and_broken_templates_are_errors() {
        let typo = Format::parse("{{.Nmes}}").unwrap();
        let error = typo
            .render_rows(FIELDS, &rows())
            .err()
            .unwrap()
            .error
            .to_string();
        assert!(error.contains("ID, Names, Labels"), "{error}");
        assert!(Format::parse("{{.Names").is_err());
        assert!(Format::parse("{{nosuchfunction .Names}}").is_err());
    }
}
