//! The registry of diagnostic codes: every check's stable public name, listed once.
//!
//! The names are public: they appear in `validate --format json` (`code`), in GitHub
//! annotations (`title=`), in the text output (`error[missing-undo]: ...`) and in
//! `# runbook:allow <code>` comments. Renaming one breaks users, so a code's string never
//! changes; a check that changes meaning gets a new code. The one macro below writes the
//! enum, its strings, its docs and [`Code::ALL`] from one list, so none can be forgotten.

macro_rules! codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $text:literal,)+) => {
        /// A stable name for one check; see [`Code::doc`] for what each means.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Code {
            /// Every code, in registry order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)+];

            /// The public name, such as `missing-undo`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)+
                }
            }

            /// One line saying what the check finds.
            pub fn doc(self) -> &'static str {
                match self {
                    $(Code::$variant => concat!($($doc),+).trim(),)+
                }
            }
        }
    };
}

codes! {
    // ----- files and YAML -------------------------------------------------------------------
    /// A file or folder cannot be read, or a file is not UTF-8.
    Io = "io",
    /// A file is larger than the engine reads (4 MiB).
    FileTooLarge = "file-too-large",
    /// A path in a folder is not read: it is not a regular file (a named pipe, a socket, a
    /// device), or it links to a folder that is read already (a warning).
    SkippedPath = "skipped-path",
    /// The file holds no document where one is expected (a scenario or a test file, or a file
    /// named to `validate`).
    Empty = "empty",
    /// A scenario file holds more than one YAML document.
    ExtraDocument = "extra-document",
    /// The text is not valid YAML.
    YamlSyntax = "yaml-syntax",
    /// A mapping key is not a plain scalar.
    YamlKey = "yaml-key",
    /// An alias inside the collection its anchor names: a node cannot hold itself. (An alias
    /// to an anchor never defined is `yaml-syntax`: the parser refuses it.)
    YamlAlias = "yaml-alias",
    /// A tagged scalar (`!!int`, `!!bool`, ...) does not fit its tag.
    YamlTag = "yaml-tag",
    /// A number does not fit the range the engine takes.
    YamlNumber = "yaml-number",
    /// Collections nest deeper than the parser allows.
    YamlTooDeep = "yaml-too-deep",
    /// The document expands (through aliases) to more nodes than the parser allows.
    YamlTooLarge = "yaml-too-large",
    /// A mapping holds the same key twice.
    DuplicateKey = "duplicate-key",
    // ----- structure ------------------------------------------------------------------------
    /// A document's `kind` is neither `Runbook` nor `FactLibrary`.
    UnknownKind = "unknown-kind",
    /// An `apiVersion` the engine does not take, or a kind whose API group is unknown.
    ApiVersion = "api-version",
    /// A field the schema does not define, often a typo.
    UnknownField = "unknown-field",
    /// A required field is absent.
    MissingField = "missing-field",
    /// A value of the wrong type, such as a string where a list belongs.
    WrongType = "wrong-type",
    /// A value outside the values an enumerated field takes.
    UnknownValue = "unknown-value",
    /// A number below the field's minimum or above its maximum.
    OutOfRange = "out-of-range",
    /// A value the typed document refuses after the structure check passed.
    InvalidValue = "invalid-value",
    /// Two fields that exclude each other are both set (scenarios).
    ConflictingFields = "conflicting-fields",
    /// A scenario defines the same object twice.
    DuplicateObject = "duplicate-object",
    /// A scenario scripts the same command twice.
    DuplicateScript = "duplicate-script",
    /// The scenario a scenario `extends` cannot be read, or is invalid.
    Extends = "extends",
    /// Scenarios that extend each other in a circle.
    ExtendsCycle = "extends-cycle",
    // ----- names ----------------------------------------------------------------------------
    /// A runbook name that is not a DNS label.
    RunbookName = "runbook-name",
    /// Two runbooks with the same `metadata.name`.
    DuplicateRunbook = "duplicate-runbook",
    /// Two fact libraries with the same `metadata.name`.
    DuplicateLibrary = "duplicate-library",
    /// A runbook in `<folder>/runbook.yaml` whose `metadata.name` is not the folder's name.
    FolderName = "folder-name",
    // ----- params ---------------------------------------------------------------------------
    /// A param name expressions cannot read as `params.NAME`.
    ParamName = "param-name",
    /// Two params with the same name.
    DuplicateParam = "duplicate-param",
    /// A param's `from:` that names no alert label or annotation.
    ParamFrom = "param-from",
    /// A param's `pattern` that is not a valid regex, or on a param that is not a string.
    ParamPattern = "param-pattern",
    /// A param's default or `enum` value that its type, pattern or allowed values refuse.
    ParamDefault = "param-default",
    /// A param bound from an alert in a runbook that has no triggers (a warning).
    UnusedFrom = "unused-from",
    /// A string param bound from an alert that reaches a command's arguments (`run`, `exec`, a
    /// `command` or `exec` fact) with no `pattern` or `enum`: an alert could pass `--all`.
    AlertParamInCommand = "alert-param-in-command",
    /// A string param that reaches a command's arguments with no `pattern` or `enum` (a
    /// warning).
    ParamInCommand = "param-in-command",
    // ----- facts ----------------------------------------------------------------------------
    /// A fact name that is not dotted lowercase words, is reserved, or sits inside another fact.
    FactName = "fact-name",
    /// Two facts with the same name, in runbooks or libraries.
    DuplicateFact = "duplicate-fact",
    /// A fact with no source, more than one, or a `jsonpath` on an `expr` fact.
    FactSource = "fact-source",
    /// A `jsonpath` that does not parse.
    JsonPath = "jsonpath",
    /// An `http` fact whose URL is not http:// or https://.
    HttpUrl = "http-url",
    /// A fact the runbook declares but nothing reads (a warning).
    UnusedFact = "unused-fact",
    /// An `expectStatus` entry that is not an HTTP status (100-599) or a `LOW-HIGH` or `Nxx`
    /// range of them, or an empty list.
    ExpectStatus = "expect-status",
    /// An `allowExitCodes` that is empty, holds a code outside 0-255, or sits on a step that is
    /// not a `run` or `exec`.
    ExitCodes = "exit-codes",
    /// An `allowExitCodes` without 0, so a process that succeeds fails (a warning).
    ExitCodesWithoutZero = "exit-codes-without-zero",
    // ----- functions ------------------------------------------------------------------------
    /// A library function whose name is invalid, taken (by another or by a built-in), whose
    /// params are invalid, or whose body reads anything but its params.
    Function = "function",
    // ----- expressions and templates ------------------------------------------------------------
    /// An expression or `${...}` template that does not parse.
    ExpressionSyntax = "expression-syntax",
    /// An expression reads a name that is no fact.
    UndefinedFact = "undefined-fact",
    /// An expression, a fact or a call reads a param that is not declared.
    UndefinedParam = "undefined-param",
    /// A duration such as `30s` or `5m` that does not parse.
    Duration = "duration",
    /// A command that is empty or whose quotes are never closed.
    Command = "command",
    // ----- triggers -------------------------------------------------------------------------
    /// A trigger with an empty `alertName`.
    Trigger = "trigger",
    /// A label matcher that is not Alertmanager's syntax.
    Matcher = "matcher",
    /// A trigger with `cooldown: 0s`: every new incident re-runs the remediation (a warning).
    NoCooldown = "no-cooldown",
    // ----- steps and needs ----------------------------------------------------------------------
    /// The runbook has no steps.
    NoSteps = "no-steps",
    /// A step id that is not lowercase letters, digits, `-` and `_`.
    StepId = "step-id",
    /// Two steps with the same id, written or defaulted.
    DuplicateStepId = "duplicate-step-id",
    /// `needs` or `steps.<id>` names a step that does not exist.
    UnknownStep = "unknown-step",
    /// Steps, facts, library functions or runbooks that depend on each other in a circle.
    Cycle = "cycle",
    /// A step (or undo) with no action.
    NoAction = "no-action",
    /// A step with more than one action.
    SeveralActions = "several-actions",
    /// `interval` or `failWhen` (fields of a `verify`) on a step that is not a `verify`.
    Interval = "interval",
    /// `readonly` on a step that is not a `run` or `exec`.
    ReadOnly = "readonly",
    /// `env` on a step that is not a `run`, or a name no environment variable can have.
    Env = "env",
    /// A `forEach` field that is wrong: `as` that is not a free name, `parallelism` or
    /// `maxItems` below 1, `key`/`as`/`parallelism`/`maxItems` without `forEach`, or a
    /// `forEach` where it cannot be (a rollback step, a `capture`).
    ForEach = "for-each",
    /// A `capture` whose name is not an identifier, or a name captured twice.
    Capture = "capture",
    /// `vars.NAME` where no step captures `NAME`, or `vars`/`steps` read where they are not in
    /// scope (a fact).
    UnknownVar = "unknown-var",
    /// `steps.<id>.<field>` that names a field a step result does not have.
    StepResult = "step-result",
    // ----- actions --------------------------------------------------------------------------
    /// `replicas` that is negative or not a number.
    Replicas = "replicas",
    /// `restart` on a kind that has no rollout.
    RestartKind = "restart-kind",
    /// A patch body that does not fit its patch type.
    PatchBody = "patch-body",
    /// A strategic merge patch on a custom resource.
    PatchType = "patch-type",
    /// An `apply` manifest that is not a Kubernetes object.
    ApplyManifest = "apply-manifest",
    /// A `wait` with both or neither of `condition` and `until`.
    Wait = "wait",
    /// A value in a patch or manifest of a type the API server refuses for that field, such
    /// as `replicas: "3"`, an annotation written `3`, or a `${...}` that keeps a type the
    /// field does not take (a warning).
    FieldType = "field-type",
    // ----- undo and rollback ----------------------------------------------------------------
    /// An `undo` that holds step fields, cannot undo anything, or sits beside `irreversible`.
    Undo = "undo",
    /// A step that changes the system with no `undo` and no `irreversible` (a warning).
    MissingUndo = "missing-undo",
    /// A patch or apply whose native undo would put back a field the API server will not let
    /// go back (a claim's size, an immutable field), with no `undo` or `irreversible` (a
    /// warning).
    UndoRefused = "undo-refused",
    /// A named rollback that does not exist.
    Rollback = "rollback",
    /// `needs` on a rollback step, which runs in order.
    RollbackNeeds = "rollback-needs",
    /// `undo` on a rollback step, which is never undone.
    RollbackUndo = "rollback-undo",
    /// A `# runbook:allow` comment that names no code, so it waives nothing (a warning).
    UnknownCode = "unknown-code",
    // ----- calls ----------------------------------------------------------------------------
    /// A call to a runbook that does not exist.
    UnknownRunbook = "unknown-runbook",
    /// A runbook that calls itself, directly or through others.
    CallCycle = "call-cycle",
    // ----- the engine -------------------------------------------------------------------------
    /// An invariant of the checker broke; a bug to report, which no runbook should reach.
    Internal = "internal",
}

impl Code {
    /// The code named `text`, if there is one.
    pub fn from_name(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|code| code.as_str() == text)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_unique_name_and_a_doc() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "two codes share a name");
        for code in Code::ALL {
            assert!(!code.doc().is_empty(), "{code} has no doc");
            assert_eq!(Code::from_name(code.as_str()), Some(*code));
        }
    }
}
