"""De-identification of DICOM and NIfTI files: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

Why it is built this way:

* The profile's Table E.1-1 is kept below as *data* (:data:`PROFILE_TABLE`, DICOM 2024b edition, 620 rows: tag,
  action code, attribute name), so the code that applies it is short and the test can check every row.
* The table applies at every nesting level (a sequence item is a data set like any other).
* Action codes with alternatives are resolved the conformance-preserving way without ever keeping the original
  value: ``Z/D``, ``X/Z``, ``X/Z/D`` -> Z (emptied), ``X/D`` -> D (dummy), ``X/Z/U*`` -> the sequence is kept and
  cleaned recursively, so the UIDs it references are replaced consistently (derived images stay linked).
* UIDs (action U) are replaced by ``2.25.<int>`` where the integer comes from an HMAC-SHA256 of the original UID
  under the site key: the same input and key always give the same UID (series and studies stay linked across runs
  and files); a different key gives unrelated UIDs; without the key they cannot be reversed or recomputed.
* Patient's Name / Patient ID get a keyed pseudonym; the identity <-> pseudonym map (and which input file became
  which output file) is written only encrypted (``identity_map.enc``, see :mod:`medwb.privacy.crypto`).
* Output file names never reuse input paths (folder names such as ``98892003`` are often patient IDs):
  ``OUT/<pseudonym>/<new SeriesInstanceUID>/<new SOPInstanceUID>.dcm``.
* Pixel Data is never touched (byte-identical, compressed or not); Overlay Data / Curve Data / Icon Image Sequence
  are removed because the profile says X for them (they can carry burned-in text).
* Burned-in annotation: ``BurnedInAnnotation = YES``, or the attribute missing for a modality / SOP class prone to
  burned-in text (:data:`BURNED_IN_PRONE_MODALITIES`, Secondary Capture) -> the file is flagged and left out unless
  ``allow_burned_in``. medwb does not clean pixels (no Clean Pixel Data Option).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import json
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

import medwb
from medwb.atomic import atomic_write
from medwb.errors import CryptoError, DataError
from medwb.privacy import crypto

# --------------------------------------------------------------------------------------------------------------------
# DICOM PS3.15 (2024b) Table E.1-1, column "Basic Prof.": tag, action code, attribute name.
#   D  replace with a non-zero length dummy value        Z  replace with a zero length value
#   X  remove                                            U  replace with a consistent non-zero length UID
#   Z/D, X/Z, X/D, X/Z/D, X/Z/U*: see the module docstring for how medwb resolves them.
# "xx" in a tag is a repeating group (curves 50xx, overlays 60xx). Private attributes (odd groups) are X unless
# safe-listed (Retain Safe Private Option, off by default).
PROFILE_TABLE = """
0000,1000  X      Affected SOP Instance UID
0000,1001  U      Requested SOP Instance UID
0002,0003  U      Media Storage SOP Instance UID
0004,1511  U      Referenced SOP Instance UID in File
0008,0012  X/D    Instance Creation Date
0008,0013  X/Z/D  Instance Creation Time
0008,0014  U      Instance Creator UID
0008,0015  X      Instance Coercion DateTime
0008,0017  U      Acquisition UID
0008,0018  U      SOP Instance UID
0008,0019  U      Pyramid UID
0008,0020  Z      Study Date
0008,0021  X/D    Series Date
0008,0022  X/Z    Acquisition Date
0008,0023  Z/D    Content Date
0008,0024  X      Overlay Date
0008,0025  X      Curve Date
0008,002A  X/Z/D  Acquisition DateTime
0008,0030  Z      Study Time
0008,0031  X/D    Series Time
0008,0032  X/Z    Acquisition Time
0008,0033  Z/D    Content Time
0008,0034  X      Overlay Time
0008,0035  X      Curve Time
0008,0050  Z      Accession Number
0008,0054  X      Retrieve AE Title
0008,0055  X      Station AE Title
0008,0058  U      Failed SOP Instance UID List
0008,0080  X/Z/D  Institution Name
0008,0081  X      Institution Address
0008,0082  X/Z/D  Institution Code Sequence
0008,0090  Z      Referring Physician's Name
0008,0092  X      Referring Physician's Address
0008,0094  X      Referring Physician's Telephone Numbers
0008,0096  X      Referring Physician Identification Sequence
0008,009C  Z      Consulting Physician's Name
0008,009D  X      Consulting Physician Identification Sequence
0008,0106  D      Context Group Version
0008,0107  D      Context Group Local Version
0008,0201  X      Timezone Offset From UTC
0008,1000  X      Network ID
0008,1010  X/Z/D  Station Name
0008,1030  X      Study Description
0008,103E  X      Series Description
0008,1040  X      Institutional Department Name
0008,1041  X      Institutional Department Type Code Sequence
0008,1048  X      Physician(s) of Record
0008,1049  X      Physician(s) of Record Identification Sequence
0008,1050  X      Performing Physician's Name
0008,1052  X      Performing Physician Identification Sequence
0008,1060  X      Name of Physician(s) Reading Study
0008,1062  X      Physician(s) Reading Study Identification Sequence
0008,1070  X/Z/D  Operators' Name
0008,1072  X/D    Operator Identification Sequence
0008,1080  X      Admitting Diagnoses Description
0008,1084  X      Admitting Diagnoses Code Sequence
0008,1088  X      Pyramid Description
0008,1110  X/Z    Referenced Study Sequence
0008,1111  X/Z/D  Referenced Performed Procedure Step Sequence
0008,1120  X      Referenced Patient Sequence
0008,1140  X/Z/U* Referenced Image Sequence
0008,1155  U      Referenced SOP Instance UID
0008,1195  U      Transaction UID
0008,2111  X      Derivation Description
0008,2112  X/Z/U* Source Image Sequence
0008,3010  U      Irradiation Event UID
0008,4000  X      Identifying Comments
0010,0010  Z      Patient's Name
0010,0020  Z/D    Patient ID
0010,0021  X      Issuer of Patient ID
0010,0030  Z      Patient's Birth Date
0010,0032  X      Patient's Birth Time
0010,0040  Z      Patient's Sex
0010,0050  X      Patient's Insurance Plan Code Sequence
0010,0101  X      Patient's Primary Language Code Sequence
0010,0102  X      Patient's Primary Language Modifier Code Sequence
0010,1000  X      Other Patient IDs
0010,1001  X      Other Patient Names
0010,1002  X      Other Patient IDs Sequence
0010,1005  X      Patient's Birth Name
0010,1010  X      Patient's Age
0010,1020  X      Patient's Size
0010,1030  X      Patient's Weight
0010,1040  X      Patient's Address
0010,1050  X      Insurance Plan Identification
0010,1060  X      Patient's Mother's Birth Name
0010,1080  X      Military Rank
0010,1081  X      Branch of Service
0010,1090  X      Medical Record Locator
0010,1100  X      Referenced Patient Photo Sequence
0010,2000  X      Medical Alerts
0010,2110  X      Allergies
0010,2150  X      Country of Residence
0010,2152  X      Region of Residence
0010,2154  X      Patient's Telephone Numbers
0010,2155  X      Patient's Telecom Information
0010,2160  X      Ethnic Group
0010,2180  X      Occupation
0010,21A0  X      Smoking Status
0010,21B0  X      Additional Patient History
0010,21C0  X      Pregnancy Status
0010,21D0  X      Last Menstrual Date
0010,21F0  X      Patient's Religious Preference
0010,2203  X/Z    Patient's Sex Neutered
0010,2297  X      Responsible Person
0010,2299  X      Responsible Organization
0010,4000  X      Patient Comments
0012,0010  D      Clinical Trial Sponsor Name
0012,0020  D      Clinical Trial Protocol ID
0012,0021  Z      Clinical Trial Protocol Name
0012,0022  X      Issuer of Clinical Trial Protocol ID
0012,0023  X      Other Clinical Trial Protocol IDs Sequence
0012,0030  Z      Clinical Trial Site ID
0012,0031  Z      Clinical Trial Site Name
0012,0032  X      Issuer of Clinical Trial Site ID
0012,0040  D      Clinical Trial Subject ID
0012,0041  X      Issuer of Clinical Trial Subject ID
0012,0042  D      Clinical Trial Subject Reading ID
0012,0043  X      Issuer of Clinical Trial Subject Reading ID
0012,0050  Z      Clinical Trial Time Point ID
0012,0051  X      Clinical Trial Time Point Description
0012,0055  X      Issuer of Clinical Trial Time Point ID
0012,0060  Z      Clinical Trial Coordinating Center Name
0012,0071  X      Clinical Trial Series ID
0012,0072  X      Clinical Trial Series Description
0012,0073  X      Issuer of Clinical Trial Series ID
0012,0081  D      Clinical Trial Protocol Ethics Committee Name
0012,0082  X      Clinical Trial Protocol Ethics Committee Approval Number
0012,0086  X      Ethics Committee Approval Effectiveness Start Date
0012,0087  X      Ethics Committee Approval Effectiveness End Date
0014,407C  X      Calibration Time
0014,407E  X      Calibration Date
0016,002B  X      Maker Note
0016,004B  X      Device Setting Description
0016,004D  X      Camera Owner Name
0016,004E  X      Lens Specification
0016,004F  X      Lens Make
0016,0050  X      Lens Model
0016,0051  X      Lens Serial Number
0016,0070  X      GPS Version ID
0016,0071  X      GPS Latitude Ref
0016,0072  X      GPS Latitude
0016,0073  X      GPS Longitude Ref
0016,0074  X      GPS Longitude
0016,0075  X      GPS Altitude Ref
0016,0076  X      GPS Altitude
0016,0077  X      GPS Time Stamp
0016,0078  X      GPS Satellites
0016,0079  X      GPS Status
0016,007A  X      GPS Measure Mode
0016,007B  X      GPS DOP
0016,007C  X      GPS Speed Ref
0016,007D  X      GPS Speed
0016,007E  X      GPS Track Ref
0016,007F  X      GPS Track
0016,0080  X      GPS Img Direction Ref
0016,0081  X      GPS Img Direction
0016,0082  X      GPS Map Datum
0016,0083  X      GPS Dest Latitude Ref
0016,0084  X      GPS Dest Latitude
0016,0085  X      GPS Dest Longitude Ref
0016,0086  X      GPS Dest Longitude
0016,0087  X      GPS Dest Bearing Ref
0016,0088  X      GPS Dest Bearing
0016,0089  X      GPS Dest Distance Ref
0016,008A  X      GPS Dest Distance
0016,008B  X      GPS Processing Method
0016,008C  X      GPS Area Information
0016,008D  X      GPS Date Stamp
0016,008E  X      GPS Differential
0018,0010  Z/D    Contrast/Bolus Agent
0018,0027  X      Intervention Drug Stop Time
0018,0035  X      Intervention Drug Start Time
0018,1000  X/Z/D  Device Serial Number
0018,1002  U      Device UID
0018,1004  X      Plate ID
0018,1005  X      Generator ID
0018,1007  X      Cassette ID
0018,1008  X      Gantry ID
0018,1009  X      Unique Device Identifier
0018,100A  X      UDI Sequence
0018,100B  U      Manufacturer's Device Class UID
0018,1012  X      Date of Secondary Capture
0018,1014  X      Time of Secondary Capture
0018,1030  X/D    Protocol Name
0018,1042  X      Contrast/Bolus Start Time
0018,1043  X      Contrast/Bolus Stop Time
0018,1072  X      Radiopharmaceutical Start Time
0018,1073  X      Radiopharmaceutical Stop Time
0018,1078  X      Radiopharmaceutical Start DateTime
0018,1079  X      Radiopharmaceutical Stop DateTime
0018,11BB  D      Acquisition Field Of View Label
0018,1200  X      Date of Last Calibration
0018,1201  X      Time of Last Calibration
0018,1202  X      DateTime of Last Calibration
0018,1203  Z      Calibration DateTime
0018,1204  X      Date of Manufacture
0018,1205  X      Date of Installation
0018,1400  X/D    Acquisition Device Processing Description
0018,2042  U      Target UID
0018,4000  X      Acquisition Comments
0018,5011  X      Transducer Identification Sequence
0018,700A  X/D    Detector ID
0018,700C  X/D    Date of Last Detector Calibration
0018,700E  X/D    Time of Last Detector Calibration
0018,9074  D      Frame Acquisition DateTime
0018,9151  D      Frame Reference DateTime
0018,9185  X      Respiratory Motion Compensation Technique Description
0018,9367  D      X-Ray Source ID
0018,9369  D      Source Start DateTime
0018,936A  D      Source End DateTime
0018,9371  D      X-Ray Detector ID
0018,9373  X      X-Ray Detector Label
0018,937B  X      Multi-energy Acquisition Description
0018,937F  X      Decomposition Description
0018,9424  X      Acquisition Protocol Description
0018,9516  X/D    Start Acquisition DateTime
0018,9517  X/D    End Acquisition DateTime
0018,9623  D      Functional Sync Pulse
0018,9701  D      Decay Correction DateTime
0018,9804  D      Exclusion Start DateTime
0018,9919  Z/D    Instruction Performed DateTime
0018,9937  X      Requested Series Description
0018,A002  X      Contribution DateTime
0018,A003  X      Contribution Description
0020,000D  U      Study Instance UID
0020,000E  U      Series Instance UID
0020,0010  Z      Study ID
0020,0027  X      Pyramid Label
0020,0052  U      Frame of Reference UID
0020,0200  U      Synchronization Frame of Reference UID
0020,3401  X      Modifying Device ID
0020,3403  X      Modified Image Date
0020,3405  X      Modified Image Time
0020,3406  X      Modified Image Description
0020,4000  X      Image Comments
0020,9158  X      Frame Comments
0020,9161  U      Concatenation UID
0020,9164  U      Dimension Organization UID
0028,1199  U      Palette Color Lookup Table UID
0028,1214  U      Large Palette Color Lookup Table UID
0028,4000  X      Image Presentation Comments
0032,0012  X      Study ID Issuer
0032,0032  X      Study Verified Date
0032,0033  X      Study Verified Time
0032,0034  X      Study Read Date
0032,0035  X      Study Read Time
0032,1000  X      Scheduled Study Start Date
0032,1001  X      Scheduled Study Start Time
0032,1010  X      Scheduled Study Stop Date
0032,1011  X      Scheduled Study Stop Time
0032,1020  X      Scheduled Study Location
0032,1021  X      Scheduled Study Location AE Title
0032,1030  X      Reason for Study
0032,1032  X      Requesting Physician
0032,1033  X      Requesting Service
0032,1040  X      Study Arrival Date
0032,1041  X      Study Arrival Time
0032,1050  X      Study Completion Date
0032,1051  X      Study Completion Time
0032,1060  X/Z    Requested Procedure Description
0032,1066  X      Reason for Visit
0032,1067  X      Reason for Visit Code Sequence
0032,1070  X      Requested Contrast Agent
0032,4000  X      Study Comments
0034,0001  D      Flow Identifier Sequence
0034,0002  D      Flow Identifier
0034,0005  D      Source Identifier
0034,0007  D      Frame Origin Timestamp
0038,0004  X      Referenced Patient Alias Sequence
0038,0010  X      Admission ID
0038,0011  X      Issuer of Admission ID
0038,0014  X      Issuer of Admission ID Sequence
0038,001A  X      Scheduled Admission Date
0038,001B  X      Scheduled Admission Time
0038,001C  X      Scheduled Discharge Date
0038,001D  X      Scheduled Discharge Time
0038,001E  X      Scheduled Patient Institution Residence
0038,0020  X      Admitting Date
0038,0021  X      Admitting Time
0038,0030  X      Discharge Date
0038,0032  X      Discharge Time
0038,0040  X      Discharge Diagnosis Description
0038,0050  X      Special Needs
0038,0060  X      Service Episode ID
0038,0061  X      Issuer of Service Episode ID
0038,0062  X      Service Episode Description
0038,0064  X      Issuer of Service Episode ID Sequence
0038,0300  X      Current Patient Location
0038,0400  X      Patient's Institution Residence
0038,0500  X      Patient State
0038,4000  X      Visit Comments
003A,0310  U      Multiplex Group UID
003A,0314  D      Impedance Measurement DateTime
003A,0329  X      Waveform Filter Description
003A,032B  X      Filter Lookup Table Description
0040,0001  X      Scheduled Station AE Title
0040,0002  X      Scheduled Procedure Step Start Date
0040,0003  X      Scheduled Procedure Step Start Time
0040,0004  X      Scheduled Procedure Step End Date
0040,0005  X      Scheduled Procedure Step End Time
0040,0006  X      Scheduled Performing Physician's Name
0040,0007  X      Scheduled Procedure Step Description
0040,0009  X      Scheduled Procedure Step ID
0040,000B  X      Scheduled Performing Physician Identification Sequence
0040,0010  X      Scheduled Station Name
0040,0011  X      Scheduled Procedure Step Location
0040,0012  X      Pre-Medication
0040,0241  X      Performed Station AE Title
0040,0242  X      Performed Station Name
0040,0243  X      Performed Location
0040,0244  X      Performed Procedure Step Start Date
0040,0245  X      Performed Procedure Step Start Time
0040,0250  X      Performed Procedure Step End Date
0040,0251  X      Performed Procedure Step End Time
0040,0253  X      Performed Procedure Step ID
0040,0254  X      Performed Procedure Step Description
0040,0275  X      Request Attributes Sequence
0040,0280  X      Comments on the Performed Procedure Step
0040,0310  X      Comments on Radiation Dose
0040,050A  X      Specimen Accession Number
0040,0512  D      Container Identifier
0040,0513  Z      Issuer of the Container Identifier Sequence
0040,051A  X      Container Description
0040,0551  D      Specimen Identifier
0040,0554  U      Specimen UID
0040,0555  X/Z    Acquisition Context Sequence
0040,0562  Z      Issuer of the Specimen Identifier Sequence
0040,0600  X      Specimen Short Description
0040,0602  X      Specimen Detailed Description
0040,0610  Z      Specimen Preparation Sequence
0040,06FA  X      Slide Identifier
0040,1001  X      Requested Procedure ID
0040,1002  X      Reason for the Requested Procedure
0040,1004  X      Patient Transport Arrangements
0040,1005  X      Requested Procedure Location
0040,100A  X      Reason for Requested Procedure Code Sequence
0040,1010  X      Names of Intended Recipients of Results
0040,1011  X      Intended Recipients of Results Identification Sequence
0040,1101  D      Person Identification Code Sequence
0040,1102  X      Person's Address
0040,1103  X      Person's Telephone Numbers
0040,1104  X      Person's Telecom Information
0040,1400  X      Requested Procedure Comments
0040,2001  X      Reason for the Imaging Service Request
0040,2004  X      Issue Date of Imaging Service Request
0040,2005  X      Issue Time of Imaging Service Request
0040,2008  X      Order Entered By
0040,2009  X      Order Enterer's Location
0040,2010  X      Order Callback Phone Number
0040,2011  X      Order Callback Telecom Information
0040,2016  Z      Placer Order Number / Imaging Service Request
0040,2017  Z      Filler Order Number / Imaging Service Request
0040,2400  X      Imaging Service Request Comments
0040,3001  X      Confidentiality Constraint on Patient Data Description
0040,4005  X      Scheduled Procedure Step Start DateTime
0040,4008  X      Scheduled Procedure Step Expiration DateTime
0040,4010  X      Scheduled Procedure Step Modification DateTime
0040,4011  X      Expected Completion DateTime
0040,4023  U      Referenced General Purpose Scheduled Procedure Step Transaction UID
0040,4025  X      Scheduled Station Name Code Sequence
0040,4027  X      Scheduled Station Geographic Location Code Sequence
0040,4028  X      Performed Station Name Code Sequence
0040,4030  X      Performed Station Geographic Location Code Sequence
0040,4034  X      Scheduled Human Performers Sequence
0040,4035  X      Actual Human Performers Sequence
0040,4036  X      Human Performer's Organization
0040,4037  X      Human Performer's Name
0040,4050  X      Performed Procedure Step Start DateTime
0040,4051  X      Performed Procedure Step End DateTime
0040,4052  X      Procedure Step Cancellation DateTime
0040,A023  X      Findings Group Recording Date (Trial)
0040,A024  X      Findings Group Recording Time (Trial)
0040,A027  D      Verifying Organization
0040,A030  D      Verification DateTime
0040,A032  X/D    Observation DateTime
0040,A033  X      Observation Start DateTime
0040,A073  D      Verifying Observer Sequence
0040,A075  D      Verifying Observer Name
0040,A078  X      Author Observer Sequence
0040,A07A  X      Participant Sequence
0040,A07C  X      Custodial Organization Sequence
0040,A082  Z      Participation DateTime
0040,A088  Z      Verifying Observer Identification Code Sequence
0040,A110  X      Date of Document or Verbal Transaction (Trial)
0040,A112  X      Time of Document Creation or Verbal Transaction (Trial)
0040,A120  D      DateTime
0040,A121  D      Date
0040,A122  D      Time
0040,A123  D      Person Name
0040,A124  U      UID
0040,A13A  D      Referenced DateTime
0040,A171  U      Observation UID
0040,A172  U      Referenced Observation UID (Trial)
0040,A192  X      Observation Date (Trial)
0040,A193  X      Observation Time (Trial)
0040,A307  X      Current Observer (Trial)
0040,A352  X      Verbal Source (Trial)
0040,A353  X      Address (Trial)
0040,A354  X      Telephone Number (Trial)
0040,A358  X      Verbal Source Identifier Code Sequence (Trial)
0040,A402  U      Observation Subject UID (Trial)
0040,A730  D      Content Sequence
0040,DB06  X      Template Version
0040,DB07  X      Template Local Version
0040,DB0C  U      Template Extension Organization UID
0040,DB0D  U      Template Extension Creator UID
0040,E004  X      HL7 Document Effective Time
0042,0011  D      Encapsulated Document
0044,0004  X      Approval Status DateTime
0044,000B  X      Product Expiration DateTime
0044,0010  X      Substance Administration DateTime
0044,0104  D      Assertion DateTime
0044,0105  X      Assertion Expiration DateTime
0050,001B  X      Container Component ID
0050,0020  X      Device Description
0050,0021  X      Long Device Description
0062,0021  U      Tracking UID
0064,0003  U      Source Frame of Reference UID
0068,6226  D      Effective DateTime
0068,6270  D      Information Issue DateTime
006A,0003  D      Annotation Group UID
006A,0005  D      Annotation Group Label
006A,0006  X      Annotation Group Description
0070,0001  D      Graphic Annotation Sequence
0070,0082  X      Presentation Creation Date
0070,0083  X      Presentation Creation Time
0070,0084  Z/D    Content Creator's Name
0070,0086  X      Content Creator's Identification Code Sequence
0070,031A  U      Fiducial UID
0070,1101  U      Presentation Display Collection UID
0070,1102  U      Presentation Sequence Collection UID
0072,000A  D      Hanging Protocol Creation DateTime
0072,005E  D      Selector AE Value
0072,005F  D      Selector AS Value
0072,0061  D      Selector DA Value
0072,0063  D      Selector DT Value
0072,0065  D      Selector OB Value
0072,0066  D      Selector LO Value
0072,0068  D      Selector LT Value
0072,006A  D      Selector PN Value
0072,006B  D      Selector TM Value
0072,006C  D      Selector SH Value
0072,006D  D      Selector UN Value
0072,006E  D      Selector ST Value
0072,0070  D      Selector UT Value
0072,0071  D      Selector UR Value
0074,1234  X      Receiving AE
0074,1236  X      Requesting AE
0088,0140  U      Storage Media File-set UID
0088,0200  X      Icon Image Sequence
0088,0904  X      Topic Title
0088,0906  X      Topic Subject
0088,0910  X      Topic Author
0088,0912  X      Topic Keywords
0100,0420  X      SOP Authorization DateTime
0400,0100  U      Digital Signature UID
0400,0105  D      Digital Signature DateTime
0400,0115  D      Certificate of Signer
0400,0310  X      Certified Timestamp
0400,0402  X      Referenced Digital Signature Sequence
0400,0403  X      Referenced SOP Instance MAC Sequence
0400,0404  X      MAC
0400,0550  X      Modified Attributes Sequence
0400,0551  X      Nonconforming Modified Attributes Sequence
0400,0552  X      Nonconforming Data Element Value
0400,0561  X      Original Attributes Sequence
0400,0562  D      Attribute Modification DateTime
0400,0563  D      Modifying System
0400,0564  Z      Source of Previous Values
0400,0565  D      Reason for the Attribute Modification
0400,0600  X      Instance Origin Status
2030,0020  X      Text String
2100,0040  X      Creation Date
2100,0050  X      Creation Time
2100,0070  X      Originator
2100,0140  D      Destination AE
2200,0002  X/Z    Label Text
2200,0005  X/Z    Barcode Value
3002,0121  X      Position Acquisition Template Name
3002,0123  X      Position Acquisition Template Description
3006,0002  D      Structure Set Label
3006,0004  X      Structure Set Name
3006,0006  X      Structure Set Description
3006,0008  Z      Structure Set Date
3006,0009  Z      Structure Set Time
3006,0024  U      Referenced Frame of Reference UID
3006,0026  Z      ROI Name
3006,0028  X      ROI Description
3006,002D  X      ROI DateTime
3006,002E  X      ROI Observation DateTime
3006,0038  X      ROI Generation Description
3006,004D  X      ROI Creator Sequence
3006,004E  X      ROI Interpreter Sequence
3006,0085  X      ROI Observation Label
3006,0088  X      ROI Observation Description
3006,00A6  Z      ROI Interpreter
3006,00C2  U      Related Frame of Reference UID
3008,0024  D      Treatment Control Point Date
3008,0025  D      Treatment Control Point Time
3008,0054  X/D    First Treatment Date
3008,0056  X/D    Most Recent Treatment Date
3008,0105  X/Z    Source Serial Number
3008,0162  D      Safe Position Exit Date
3008,0164  D      Safe Position Exit Time
3008,0166  D      Safe Position Return Date
3008,0168  D      Safe Position Return Time
3008,0250  X/D    Treatment Date
3008,0251  X/D    Treatment Time
300A,0002  D      RT Plan Label
300A,0003  X      RT Plan Name
300A,0004  X      RT Plan Description
300A,0006  X/D    RT Plan Date
300A,0007  X/D    RT Plan Time
300A,000B  X      Treatment Sites
300A,000E  X      Prescription Description
300A,0013  U      Dose Reference UID
300A,0016  X      Dose Reference Description
300A,0072  X      Fraction Group Description
300A,0083  U      Referenced Dose Reference UID
300A,00B2  X/Z    Treatment Machine Name
300A,00C3  X      Beam Description
300A,00DD  X      Bolus Description
300A,0196  X      Fixation Device Description
300A,01A6  X      Shielding Device Description
300A,01B2  X      Setup Technique Description
300A,0216  X      Source Manufacturer
300A,022C  D      Source Strength Reference Date
300A,022E  D      Source Strength Reference Time
300A,02EB  X      Compensator Description
300A,0608  D      Treatment Position Group Label
300A,0609  U      Treatment Position Group UID
300A,0611  Z      RT Accessory Holder Slot ID
300A,0615  Z      RT Accessory Device Slot ID
300A,0619  D      Radiation Dose Identification Label
300A,0623  D      Radiation Dose In-Vivo Measurement Label
300A,062A  D      RT Tolerance Set Label
300A,0650  U      Patient Setup UID
300A,0676  X      Equipment Frame of Reference Description
300A,067C  D      Radiation Generation Mode Label
300A,067D  Z      Radiation Generation Mode Description
300A,0700  U      Treatment Session UID
300A,0734  D      Treatment Tolerance Violation Description
300A,0736  D      Treatment Tolerance Violation DateTime
300A,073A  D      Recorded RT Control Point DateTime
300A,0741  D      Interlock DateTime
300A,0742  D      Interlock Description
300A,0760  D      Override DateTime
300A,0783  D      Interlock Origin Description
300A,0785  U      Referenced Treatment Position Group UID
300A,078E  X      Patient Treatment Preparation Procedure Parameter Description
300A,0792  X      Patient Treatment Preparation Method Description
300A,0794  X      Patient Setup Photo Description
300A,079A  X      Displacement Reference Label
300C,0113  X      Reason for Omission Description
300C,0127  D      Beam Hold Transition DateTime
300E,0004  Z      Review Date
300E,0005  Z      Review Time
300E,0008  X/Z    Reviewer Name
3010,0006  U      Conceptual Volume UID
3010,000B  U      Referenced Conceptual Volume UID
3010,000F  Z      Conceptual Volume Combination Description
3010,0013  U      Constituent Conceptual Volume UID
3010,0015  U      Source Conceptual Volume UID
3010,0017  Z      Conceptual Volume Description
3010,001B  Z      Device Alternate Identifier
3010,002D  D      Device Label
3010,0031  U      Referenced Fiducials UID
3010,0033  D      User Content Label
3010,0034  D      User Content Long Label
3010,0035  D      Entity Label
3010,0036  X      Entity Name
3010,0037  X      Entity Description
3010,0038  D      Entity Long Label
3010,003B  U      RT Treatment Phase UID
3010,0043  Z      Manufacturer's Device Identifier
3010,004C  X/D    Intended Phase Start Date
3010,004D  X/D    Intended Phase End Date
3010,0054  D      RT Prescription Label
3010,0056  X/D    RT Treatment Approach Label
3010,005A  Z      RT Physician Intent Narrative
3010,005C  Z      Reason for Superseding
3010,0061  X      Prior Treatment Dose Description
3010,006E  U      Dosimetric Objective UID
3010,006F  U      Referenced Dosimetric Objective UID
3010,0077  X/D    Treatment Site
3010,007A  Z      Treatment Technique Notes
3010,007B  Z      Prescription Notes
3010,007F  Z      Fractionation Notes
3010,0081  Z      Prescription Notes Sequence
3010,0085  X      Intended Fraction Start Time
4000,0010  X      Arbitrary
4000,4000  X      Text Comments
4008,0040  X      Results ID
4008,0042  X      Results ID Issuer
4008,0100  X      Interpretation Recorded Date
4008,0101  X      Interpretation Recorded Time
4008,0102  X      Interpretation Recorder
4008,0108  X      Interpretation Transcription Date
4008,0109  X      Interpretation Transcription Time
4008,010A  X      Interpretation Transcriber
4008,010B  X      Interpretation Text
4008,010C  X      Interpretation Author
4008,0111  X      Interpretation Approver Sequence
4008,0112  X      Interpretation Approval Date
4008,0113  X      Interpretation Approval Time
4008,0114  X      Physician Approving Interpretation
4008,0115  X      Interpretation Diagnosis Description
4008,0118  X      Results Distribution List Sequence
4008,0119  X      Distribution Name
4008,011A  X      Distribution Address
4008,0200  X      Interpretation ID
4008,0202  X      Interpretation ID Issuer
4008,0300  X      Impressions
4008,4000  X      Results Comments
50xx,xxxx  X      Curve Data
60xx,3000  X      Overlay Data
60xx,4000  X      Overlay Comments
FFFA,FFFA  X      Digital Signatures Sequence
FFFC,FFFC  X      Data Set Trailing Padding
"""


@dataclass(frozen=True)
class ProfileRule:
    """One row of Table E.1-1."""

    tag: str  # "GGGG,EEEE" as in the standard ("xx" for repeating groups)
    action: str  # action code exactly as in the table
    name: str

    @property
    def keyword(self) -> str:
        if "x" in self.tag:
            return ""
        return keyword_for_tag(int(self.tag.replace(",", ""), 16)) or ""


def _parse_table(text: str) -> list[ProfileRule]:
    rules = []
    for line in text.strip().splitlines():
        tag, action, name = line[:9], line[9:].split(maxsplit=1)[0], line[9:].split(maxsplit=1)[1]
        rules.append(ProfileRule(tag=tag, action=action, name=name.strip()))
    return rules


PROFILE: list[ProfileRule] = _parse_table(PROFILE_TABLE)
_EXACT: dict[int, ProfileRule] = {int(r.tag.replace(",", ""), 16): r for r in PROFILE if "x" not in r.tag}
_REPEATING: list[ProfileRule] = [r for r in PROFILE if "x" in r.tag]

#: how a table action code is applied by medwb (conformance-preserving, never keeps the value)
RESOLVED_ACTION: dict[str, str] = {
    "D": "D", "Z": "Z", "X": "X", "U": "U",
    "Z/D": "Z", "X/Z": "Z", "X/D": "D", "X/Z/D": "Z", "X/Z/U*": "U*",
}

#: modalities that often carry burned-in text when Burned In Annotation (0028,0301) is absent
BURNED_IN_PRONE_MODALITIES = frozenset({"US", "IVUS", "SC", "OT", "XA", "RF", "ES", "XC", "GM", "DOC", "ECG"})
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its .1-.4 multi-frame variants

PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
_NEVER_SHIFTED = {0x00100030, 0x00100032}  # Patient's Birth Date / Time: Z and X in every case
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y", "IS": "0", "DS": "0"}
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_TEXT_VRS = {"AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC", "UR", "PN"}
MEDWB_IMPLEMENTATION_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "medwb-deidentifier").int)
NIFTI_SAFE_DIRS = frozenset({"imagesTr", "labelsTr", "imagesTs", "labelsTs", "images", "labels", "masks"})
IDENTITY_MAP_NAME = "identity_map.enc"
SUMMARY_CSV_NAME = "deid_summary.csv"


def rule_for(tag: int) -> ProfileRule | None:
    """The profile row that governs ``tag`` (exact tags first, then the 50xx / 60xx repeating groups)."""
    r = _EXACT.get(int(tag))
    if r is not None:
        return r
    group, elem = int(tag) >> 16, int(tag) & 0xFFFF
    for rr in _REPEATING:
        g, e = rr.tag.split(",")
        if (group & 0xFF00) != int(g[:2], 16) << 8:
            continue
        if e == "xxxx" or int(e, 16) == elem:
            return rr
    return None


# --------------------------------------------------------------------------------------------------------------------
class Pseudonymizer:
    """Keyed, deterministic replacements: UIDs, patient pseudonyms, per-patient date offsets."""

    def __init__(self, key: crypto.Key) -> None:
        self._k = key.derive("deid-hmac")

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self._k, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.<128-bit int>`` (PS3.5 B.2, UUID-derived) from HMAC(key, original)."""
        if not original:
            return original
        u = uuid.UUID(bytes=self._mac("uid", str(original).strip())[:16], version=4)
        return f"2.25.{u.int}"

    def patient(self, identity: str) -> str:
        return "MWB-" + self._mac("patient", identity).hex()[:10].upper()

    def date_offset_days(self, identity: str) -> int:
        """Days to shift this patient's dates back: 1..3650, fixed per patient and key."""
        return 1 + int.from_bytes(self._mac("dateshift", identity)[:4], "big") % 3650

    def ref(self, kind: str, value: str) -> str:
        return f"{kind}-{self._mac(kind, value).hex()[:12]}"


@dataclass
class FileRecord:
    """What happened to one input file. ``source`` is kept in memory (console) and in the encrypted map only."""

    source: Path
    kind: str  # "dicom" | "nifti" | "other"
    status: str  # "written" | "excluded" | "skipped" | "failed"
    output: Path | None = None
    reason: str = ""
    changes: Counter = field(default_factory=Counter)  # (tag "GGGG,EEEE", name, applied action) -> count
    source_ref: str = ""

    def counts(self) -> Counter:
        c: Counter = Counter()
        for (_, _, act), n in self.changes.items():
            c[act] += n
        return c


@dataclass
class DeidSummary:
    """Per-file account of a de-identification run (``to_text()`` for the console, ``to_csv()`` for the record)."""

    input: Path
    output: Path
    files: list[FileRecord]
    map_path: Path | None
    key_source: str
    key_created: bool
    shift_dates: bool
    allow_burned_in: bool

    def by_status(self, status: str) -> list[FileRecord]:
        return [f for f in self.files if f.status == status]

    def to_text(self) -> str:
        n = Counter(f.status for f in self.files)
        lines = [
            f"medwb deid: {self.input} -> {self.output}",
            f"  profile: DICOM PS3.15 E.1 Basic Application Level Confidentiality ({len(PROFILE)} table rows)"
            + ("; dates shifted per patient" if self.shift_dates else ""),
            f"  files: {n['written']} written, {n['excluded']} excluded (burned-in), "
            f"{n['skipped']} skipped, {n['failed']} failed",
            f"  identity map (encrypted): {self.map_path}" if self.map_path else "  identity map: none written",
            f"  key: {self.key_source}" + (" (NEW key file created: keep it safe, it is needed to re-identify)"
                                           if self.key_created else ""),
        ]
        for f in self.files:
            if f.status == "written":
                c = f.counts()
                what = ", ".join(f"{k} {c[k]}" for k in sorted(c))
                rel = f.output.relative_to(self.output) if f.output else ""
                lines.append(f"  written  {rel}  [{what}]" + (f"  ({f.reason})" if f.reason else ""))
            else:
                lines.append(f"  {f.status:<8} {f.source}: {f.reason}")
        return "\n".join(lines)

    def to_csv(self, path: str | Path) -> Path:
        """One row per input file. Input paths are NOT written (they can identify); ``source_ref`` is resolved
        through the encrypted identity map."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["source_ref", "kind", "status", "output", "reason", "removed_X", "emptied_Z", "dummy_D",
                    "uid_U", "date_shifted", "pseudonym", "private_removed", "attributes"])
        for f in self.files:
            c = f.counts()
            attrs = ";".join(f"{t} {nm}:{a}" for (t, nm, a) in sorted(f.changes))
            out = str(f.output.relative_to(self.output)) if f.output else ""
            w.writerow([f.source_ref, f.kind, f.status, out, f.reason, c["X"], c["Z"], c["D"], c["U"],
                        c["shifted"], c["pseudonym"], c["private-X"], attrs])
        return atomic_write(Path(path), lambda fh: fh.write(buf.getvalue().encode()))


# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Context:
    pseudo: Pseudonymizer
    patient_pseudonym: str
    shift_days: int | None
    safe_private: frozenset[tuple[str, int, int]]
    changes: Counter


def _record(ctx: _Context, tag: int, action: str) -> None:
    rule = rule_for(tag)
    name = rule.name if rule else (keyword_for_tag(tag) or "private")
    ctx.changes[(f"{int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X}", name, action)] += 1


def _shift_value(value: Any, vr: str, days: int) -> str | None:
    """Shift a DA / DT value back by ``days``; None when it does not parse (the caller then applies the profile)."""
    s = str(value).strip()
    if len(s) < 8 or not s[:8].isdigit():
        return None
    try:
        d = date(int(s[:4]), int(s[4:6]), int(s[6:8])) - timedelta(days=days)
    except ValueError:
        return None
    return d.strftime("%Y%m%d") + (s[8:] if vr == "DT" else "")


def _dummy(elem: DataElement, ctx: _Context) -> Any:
    vr = elem.VR
    if vr == "SQ":
        return Sequence([Dataset()])
    if vr == "UI":
        return _map_uids(elem.value, ctx)
    if vr in _DUMMY:
        return _DUMMY[vr]
    if vr in _TEXT_VRS:
        return _DUMMY_TEXT
    if vr in _NUMERIC_VRS:
        return 0
    if vr in _BINARY_VRS:
        return b"\x00\x00"
    return _DUMMY_TEXT


def _map_uids(value: Any, ctx: _Context) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [ctx.pseudo.uid(str(v)) for v in value]
    return ctx.pseudo.uid(str(value))


def _private_creators(ds: Dataset) -> dict[tuple[int, int], str]:
    out = {}
    for tag in ds.keys():
        if tag.is_private and 0x0010 <= tag.element <= 0x00FF:
            out[(tag.group, tag.element)] = str(ds[tag].value).strip()
    return out


def _keep_private(tag: BaseTag, creators: dict[tuple[int, int], str], safe: frozenset[tuple[str, int, int]]) -> bool:
    if not safe:
        return False
    if 0x0010 <= tag.element <= 0x00FF:  # a creator: kept when any of its block is safe-listed
        creator = creators.get((tag.group, tag.element), "")
        return any(c == creator and g == tag.group for (c, g, _) in safe)
    creator = creators.get((tag.group, tag.element >> 8), "")
    return (creator, tag.group, tag.element & 0xFF) in safe


def _clean(ds: Dataset, ctx: _Context) -> None:
    """Apply the profile to one data set and, recursively, to every sequence item in it."""
    creators = _private_creators(ds)
    for tag in list(ds.keys()):
        elem = ds[tag]  # converts raw elements; malformed values raise here (reported by the caller)
        if tag.element == 0x0000 and tag.group > 0x0002:  # group lengths would be wrong after editing
            del ds[tag]
            continue
        if tag.is_private:
            if _keep_private(tag, creators, ctx.safe_private):
                if elem.VR == "SQ":
                    for item in elem.value:
                        _clean(item, ctx)
                _record(ctx, tag, "private-K")
            else:
                del ds[tag]
                _record(ctx, tag, "private-X")
            continue
        rule = rule_for(tag)
        if tag in (PATIENT_NAME, PATIENT_ID):
            elem.value = ctx.patient_pseudonym
            _record(ctx, tag, "pseudonym")
            continue
        if ctx.shift_days is not None and elem.VR in ("DA", "DT") and tag not in _NEVER_SHIFTED:
            # Retain Longitudinal Temporal Information with Modified Dates Option: every date moves by the
            # patient's offset (table or not, so that no true date is left beside shifted ones)
            vals = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            shifted = [_shift_value(v, elem.VR, ctx.shift_days) for v in vals if v not in (None, "")]
            if shifted and all(s is not None for s in shifted):
                elem.value = shifted if len(shifted) > 1 else shifted[0]
                _record(ctx, tag, "shifted")
                continue
        if rule is None:
            if elem.VR == "SQ" and elem.value:
                for item in elem.value:
                    _clean(item, ctx)
            continue
        if ctx.shift_days is not None and elem.VR == "TM" and tag not in _NEVER_SHIFTED:
            _record(ctx, tag, "K-time")  # whole-day shift: time of day is kept (Modified Dates Option)
            continue
        action = RESOLVED_ACTION[rule.action]
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = Sequence([]) if elem.VR == "SQ" else elem.empty_value
        elif action == "D":
            elem.value = _dummy(elem, ctx)
        elif action == "U":
            if elem.VR == "SQ":  # not in the table today; kept for safety if a U row ever names a sequence
                for item in elem.value:
                    _clean(item, ctx)
            else:
                elem.value = _map_uids(elem.value, ctx)
        elif action == "U*":
            if elem.VR == "SQ":
                for item in elem.value:
                    _clean(item, ctx)
            else:
                elem.value = _map_uids(elem.value, ctx)
        _record(ctx, tag, action)


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def burned_in_reason(ds: Dataset) -> str:
    """Why this data set may show identifying text in its pixels ("" when no reason is known)."""
    bia = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if bia == "YES":
        return "Burned In Annotation = YES"
    if bia == "NO":
        return ""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    if modality in BURNED_IN_PRONE_MODALITIES:
        return f"Burned In Annotation missing for modality {modality} (prone to burned-in text)"
    if sop.startswith(_SECONDARY_CAPTURE):
        return "Burned In Annotation missing for a Secondary Capture image (prone to burned-in text)"
    return ""


def _check_complete(ds: Dataset, path: Path) -> None:
    """pydicom silently accepts a file cut short (the last value is just shorter): refuse it, because a truncated
    input would otherwise become a plausible-looking but incomplete de-identified copy."""
    from pydicom.dataelem import RawDataElement

    for tag, raw in ds._dict.items():  # raw elements still carry the declared length
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value is not None:
            if len(raw.value) < raw.length:
                raise DataError(path, f"file is truncated inside {Tag(tag)} ({len(raw.value)} of {raw.length} bytes)",
                                "re-copy or re-export the complete file")
    if "PixelData" in ds and len(ds.PixelData or b"") % 2:
        # DICOM values have even length; pydicom would pad it on writing, so the copy would not be byte-identical
        raise DataError(path, "pixel data has an odd length (corrupt or truncated file)",
                        "re-copy or re-export the complete file")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if "PixelData" in ds and (ts is None or not ts.is_compressed) and "Rows" in ds and "Columns" in ds:
        try:
            need = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                    * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 8) or 8) + 7) // 8
        except (TypeError, ValueError):
            return
        have = len(ds.PixelData or b"")
        if have < need:
            raise DataError(path, f"pixel data is truncated ({have} of {need} bytes)",
                            "re-copy or re-export the complete file")


def read_dicom(path: Path) -> Dataset:
    """Read a DICOM file with pydicom (also preamble-less ones); anything else is a :class:`DataError`."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, force=True)
                if "SOPClassUID" not in ds:
                    raise DataError(path, "not a DICOM file (no DICM prefix and no SOP Class UID)",
                                    "pass DICOM or NIfTI files; other files are skipped in a folder run") from None
            _check_complete(ds, path)
            for _ in ds.iterall():  # decode every element now, so corruption surfaces here and not half-way
                pass
        for w in caught:  # pydicom only warns when a sequence or encapsulated pixel data runs past the file end
            if "End of file reached" in str(w.message):
                raise DataError(path, f"file is truncated ({w.message})", "re-copy or re-export the complete file")
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types on corrupt input; name the file and the cause
        raise DataError(path, f"pydicom cannot parse this file ({type(e).__name__}: {str(e)[:160]})",
                        "check the file is complete DICOM; re-export it from the PACS") from None
    return ds


def deidentify_dataset(ds: Dataset, pseudo: Pseudonymizer, *, shift_dates: bool = False,
                       safe_private: frozenset[tuple[str, int, int]] = frozenset()) -> tuple[Counter, dict]:
    """De-identify ``ds`` in place. Returns (changes, identity record for the encrypted map)."""
    pid = str(ds.get("PatientID", "") or "").strip()
    pname = str(ds.get("PatientName", "") or "").strip()
    identity = pid or pname or f"study:{ds.get('StudyInstanceUID', '')}"
    pseudonym = pseudo.patient(identity)
    days = pseudo.date_offset_days(identity) if shift_dates else None
    ident = {"pseudonym": pseudonym, "PatientID": pid, "PatientName": pname,
             "PatientBirthDate": str(ds.get("PatientBirthDate", "") or ""), "date_shift_days": days}
    ctx = _Context(pseudo, pseudonym, days, safe_private, Counter())
    old_meta = getattr(ds, "file_meta", None)
    meta_sop = str(old_meta.get("MediaStorageSOPInstanceUID", "") or "") if old_meta is not None else ""
    _clean(ds, ctx)
    ds.PatientIdentityRemoved = "YES"
    method = f"medwb {medwb.__version__} PS3.15 E.1 basic profile" + ("+dates shifted" if shift_dates else "")
    ds.DeidentificationMethod = method[:64]
    codes = [_code_item("113100", "Basic Application Confidentiality Profile")]
    if shift_dates:
        codes.append(_code_item("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    if any(a == "private-K" for (_, _, a) in ctx.changes):
        codes.append(_code_item("113111", "Retain Safe Private Option"))
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if shift_dates else "REMOVED"
    # File Meta Information: describe the de-identifier (PS3.15 E.1.1 step 7), drop anything else that can leak
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit = True
        enc = getattr(ds, "original_encoding", None)
        if enc and enc[0] is not None:
            implicit = bool(enc[0])
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta = meta
    for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
               "PrivateInformationCreatorUID", "PrivateInformation"):
        if kw in meta:
            delattr(meta, kw)
    sop = str(ds.get("SOPInstanceUID", "") or "") or (pseudo.uid(meta_sop) if meta_sop else "")
    if sop:  # Media Storage SOP Instance UID is a U row: same keyed mapping as the SOP Instance UID
        meta.MediaStorageSOPInstanceUID = sop
    elif "MediaStorageSOPInstanceUID" in meta:
        del meta.MediaStorageSOPInstanceUID
    if str(ds.get("SOPClassUID", "") or ""):
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.ImplementationClassUID = MEDWB_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDWB_{medwb.__version__}"[:16]
    ds.preamble = b"\x00" * 128
    return ctx.changes, ident


# --------------------------------------------------------------------------------------------------------------------
def _nifti_name(path: Path) -> tuple[str, str]:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return path.stem, path.suffix


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def deidentify_nifti_bytes(raw: bytes, path: Path) -> tuple[bytes, list[str]]:
    """Scrub descrip / aux_file / intent_name / db_name, drop header extensions; voxel bytes copied verbatim."""
    import nibabel as nib

    try:
        hdr_size = int.from_bytes(raw[:4], "little")
        if hdr_size not in (348, 540):
            hdr_size = int.from_bytes(raw[:4], "big")
        klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(hdr_size)
        if klass is None:
            raise ValueError("header size is neither 348 (NIfTI-1) nor 540 (NIfTI-2)")
        hdr = klass.from_fileobj(io.BytesIO(raw), check=True)
        vox_offset = int(hdr["vox_offset"])
        if vox_offset < hdr_size or vox_offset > len(raw):
            raise ValueError(f"vox_offset {vox_offset} outside the file")
        data = raw[vox_offset:]
        expected = int(hdr.get_data_dtype().itemsize) * int(__import__("numpy").prod(hdr.get_data_shape()))
        if len(data) < expected:
            raise ValueError(f"truncated voxel data ({len(data)} of {expected} bytes)")
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"nibabel cannot parse this NIfTI file ({type(e).__name__}: {str(e)[:160]})",
                        "check the file is a complete .nii/.nii.gz") from None
    changed = []
    for fld in ("descrip", "aux_file", "intent_name", "db_name"):
        if fld in hdr and bytes(hdr[fld].item() if hasattr(hdr[fld], "item") else hdr[fld]).strip(b"\x00 "):
            changed.append(fld)
        if fld in hdr:
            hdr[fld] = b""
    hdr["descrip"] = b"de-identified by medwb"
    if raw[hdr_size:hdr_size + 4][:1] not in (b"", b"\x00") or vox_offset > hdr_size + 4:
        changed.append("extensions")
    new_offset = hdr_size + 4
    if hdr_size == 348:
        new_offset = max(new_offset, 352)
    hdr["vox_offset"] = new_offset
    block = hdr.binaryblock + b"\x00\x00\x00\x00"
    block += b"\x00" * (new_offset - len(block))
    return block + data, changed


def _safe_rel_dirs(rel: Path, pseudo: Pseudonymizer) -> Path:
    parts = [p if p in NIFTI_SAFE_DIRS else pseudo.ref("dir", p) for p in rel.parent.parts]
    return Path(*parts) if parts else Path()


# --------------------------------------------------------------------------------------------------------------------
def _load_map(map_path: Path, key: crypto.Key) -> dict:
    if map_path.exists():
        return json.loads(crypto.read_encrypted(map_path, key).decode())
    return {"format": "medwb-identity-map-1", "patients": {}, "sources": {}, "nifti": {}}


def _list_inputs(inp: Path) -> list[Path]:
    if inp.is_file():
        return [inp]
    return sorted(p for p in inp.rglob("*") if p.is_file() and not p.is_symlink())


def deidentify_path(
    input: str | Path,
    output: str | Path,
    *,
    key_file: str | Path | None = None,
    shift_dates: bool = False,
    allow_burned_in: bool = False,
    safe_private: tuple[tuple[str, int, int], ...] = (),
) -> DeidSummary:
    """De-identify a DICOM/NIfTI file or every such file under a folder into the folder ``output``.

    ``key_file`` (or ``$MEDWB_KEY``) keys the UID hash, pseudonyms, date offsets and the encrypted identity map;
    a ``key_file`` path that does not exist yet is created. ``safe_private`` lists private attributes to keep as
    (private creator, group, element low byte). A single unparsable input file raises :class:`DataError`; in a
    folder run such files are reported in the summary and skipped. Each output file is written atomically.
    """
    inp, out = Path(input), Path(output)
    if not inp.exists():
        raise DataError(inp, "input does not exist", "pass a DICOM/NIfTI file or a folder of them")
    out_res, inp_res = out.resolve(), inp.resolve()
    if out_res == inp_res or (inp.is_dir() and inp_res in out_res.parents):
        raise DataError(out, "the output folder is the input or inside it",
                        "choose an output folder outside the input folder")
    if out.exists() and not out.is_dir():
        raise DataError(out, "output exists and is not a folder", "pass a folder path for the output")
    key, created = crypto.load_or_create_key(key_file)
    pseudo = Pseudonymizer(key)
    safe = frozenset((str(c), int(g), int(e)) for c, g, e in safe_private)
    map_path = out / IDENTITY_MAP_NAME
    out.mkdir(parents=True, exist_ok=True)
    idmap = _load_map(map_path, key)  # a wrong key fails here, before any file is written
    files = _list_inputs(inp)
    single = inp.is_file()
    records: list[FileRecord] = []
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):  # type: ignore[no-redef]
            return x
    for path in tqdm(files, desc="deid", unit="file", disable=len(files) < 50):
        rel = path.relative_to(inp) if not single else Path(path.name)
        rec = FileRecord(source=path, kind="other", status="failed", source_ref=pseudo.ref("src", str(path)))
        records.append(rec)
        idmap["sources"][rec.source_ref] = str(path)
        try:
            if _is_nifti(path):
                rec.kind = "nifti"
                _do_nifti(path, rel, out, pseudo, rec, idmap)
            else:
                _do_dicom(path, out, pseudo, rec, idmap, shift_dates, allow_burned_in, safe)
        except DataError as e:
            if single:
                raise
            # the reason omits the path: the CSV lands beside de-identified data and paths can identify
            rec.status, rec.reason = ("skipped" if rec.kind == "other" else "failed"), f"{e.problem}. Fix: {e.fix}"
    crypto.write_encrypted(map_path, json.dumps(idmap, indent=1, sort_keys=True).encode(), key)
    summary = DeidSummary(inp, out, records, map_path, key.source, created, shift_dates, allow_burned_in)
    summary.to_csv(out / SUMMARY_CSV_NAME)
    return summary


def _do_dicom(path: Path, out: Path, pseudo: Pseudonymizer, rec: FileRecord, idmap: dict,
              shift_dates: bool, allow_burned_in: bool, safe: frozenset) -> None:
    ds = read_dicom(path)
    rec.kind = "dicom"
    if "DirectoryRecordSequence" in ds:
        rec.status = "skipped"
        rec.reason = "DICOMDIR (it lists identifying paths and names): rebuild one from the de-identified files"
        return
    reason = burned_in_reason(ds)
    if reason and not allow_burned_in:
        rec.status, rec.reason = "excluded", reason + "; pass --allow-burned-in to include it"
        return
    try:
        changes, ident = deidentify_dataset(ds, pseudo, shift_dates=shift_dates, safe_private=safe)
        series = str(ds.get("SeriesInstanceUID", "") or "") or "unknown-series"
        meta = ds.file_meta
        sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "") or pseudo.ref("sop", str(path))
        dst = out / ident["pseudonym"] / series / f"{sop}.dcm"
        # a conformant Part 10 file when the data set allows it (some anonymised exports carry empty SOP UIDs)
        full = all(str(meta.get(k, "") or "") for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"))
        atomic_write(dst, lambda f: ds.save_as(f, enforce_file_format=full))
    except DataError:
        raise
    except Exception as e:  # a value pydicom cannot re-encode: the file is reported, nothing partial is left
        raise DataError(path, f"cannot write the de-identified copy ({type(e).__name__}: {str(e)[:160]})",
                        "check the file with `medwb check`; fix or drop the offending attribute") from None
    rec.status, rec.output, rec.changes = "written", dst, changes
    if reason:
        rec.reason = f"burned-in flagged and kept on request: {reason}"
    pat = idmap["patients"].setdefault(ident.pop("pseudonym"), {})
    pat.update({k: v for k, v in ident.items() if v not in (None, "")})
    idmap["sources"][rec.source_ref] = {"input": str(path), "output": str(dst.relative_to(out))}


def _do_nifti(path: Path, rel: Path, out: Path, pseudo: Pseudonymizer, rec: FileRecord, idmap: dict) -> None:
    raw_file = path.read_bytes()
    gz = path.name.endswith(".gz")
    try:
        raw = gzip.decompress(raw_file) if gz else raw_file
    except (OSError, EOFError, ValueError) as e:
        raise DataError(path, f"corrupt gzip stream ({e})", "re-export or re-download the .nii.gz") from None
    new, changed = deidentify_nifti_bytes(raw, path)
    stem, ext = _nifti_name(path)
    pseudo_name = pseudo.ref("NII", stem)
    dst = out / "nifti" / _safe_rel_dirs(rel, pseudo) / f"{pseudo_name}{ext}"
    payload = gzip.compress(new, mtime=0) if gz else new
    atomic_write(dst, lambda f: f.write(payload))
    rec.status, rec.output = "written", dst
    for fld in changed:
        rec.changes[(f"nifti:{fld}", fld, "Z")] += 1
    rec.changes[("nifti:filename", "file name", "pseudonym")] += 1
    idmap["nifti"][pseudo_name] = stem
    idmap["sources"][rec.source_ref] = {"input": str(path), "output": str(dst.relative_to(out))}
